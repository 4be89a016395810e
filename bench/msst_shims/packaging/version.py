import re


def parse(v):
    return tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])
