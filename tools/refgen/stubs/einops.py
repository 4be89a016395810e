def rearrange(x, pattern, **kw):
    p = " ".join(pattern.replace("->", " -> ").split())
    if p == "b c f t -> b c (f t)":
        b, c, f, t = x.shape; return x.reshape(b, c, f * t)
    if p == "b c (f t) -> b c f t":
        b, c, n = x.shape; f = kw["f"]; return x.reshape(b, c, f, n // f)
    if p == "b c fr t1 -> b (t1 fr) c":
        b, c, fr, t1 = x.shape; return x.permute(0, 3, 2, 1).reshape(b, t1 * fr, c)
    if p == "b (t1 fr) c -> b c fr t1":
        b, n, c = x.shape; t1 = kw["t1"]; fr = n // t1; return x.reshape(b, t1, fr, c).permute(0, 3, 2, 1)
    if p == "b c t2 -> b t2 c":
        return x.permute(0, 2, 1)
    if p == "b t2 c -> b c t2":
        return x.permute(0, 2, 1)
    if p == "t2 b c -> b t2 c":
        return x.permute(1, 0, 2)
    raise ValueError(p)
