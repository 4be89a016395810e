def beartype(fn=None, **_):
    return fn if fn is not None else (lambda f: f)
