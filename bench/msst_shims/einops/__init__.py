"""einops stand-in for the bench (see ../README.md): rearrange, repeat,
reduce(sum), pack, unpack for patterns of names, (groups), 1 and ...."""
import math


def _parse(side):
    items, i, toks = [], 0, side.replace("(", " ( ").replace(")", " ) ").split()
    while i < len(toks):
        t = toks[i]
        if t == "(":
            j = toks.index(")", i)
            items.append(tuple(toks[i + 1:j]))
            i = j + 1
        else:
            items.append(t)
            i += 1
    return items


def _expand(items, n_ell):
    """Items -> groups of elementary names; '...' -> n_ell names, '1' -> ()."""
    out = []
    for it in items:
        names = it if isinstance(it, tuple) else (it,)
        g = []
        for nm in names:
            if nm == "...":
                g.extend(f"_e{k}" for k in range(n_ell))
            elif nm == "1":
                pass
            else:
                g.append(nm)
        if isinstance(it, tuple) or it not in ("...",):
            out.append(g)
        else:
            out.extend([[nm] for nm in g])
    return out


def _left(x, items, sizes):
    n_ell = x.dim() - (len(items) - (1 if "..." in items else 0))
    groups = _expand(items, n_ell)
    assert len(groups) == x.dim(), (items, tuple(x.shape))
    sz = dict(sizes)
    for g, d in zip(groups, x.shape):
        unknown = [nm for nm in g if nm not in sz]
        known = math.prod(sz[nm] for nm in g if nm in sz)
        if len(unknown) == 1:
            sz[unknown[0]] = d // known
        elif not unknown:
            assert known == d or (not g and d == 1), (g, d)
        else:
            raise ValueError(f"cannot infer {unknown}")
    elem = [nm for g in groups for nm in g]
    return x.reshape([sz[nm] for nm in elem]) if elem or x.dim() else x.reshape(()), elem, sz, n_ell


def _apply(x, pattern, op, sizes):
    lhs, rhs = pattern.split("->")
    litems, ritems = _parse(lhs), _parse(rhs)
    x, elem, sz, n_ell = _left(x, litems, sizes)
    rgroups = _expand(ritems, n_ell)
    relem = [nm for g in rgroups for nm in g]
    if op == "reduce":
        drop = [i for i, nm in enumerate(elem) if nm not in relem]
        if drop:
            x = x.sum(dim=drop)
        elem = [nm for nm in elem if nm in relem]
    have = [nm for nm in relem if nm in elem]
    x = x.permute([elem.index(nm) for nm in have]) if have else x
    shape, k = [], 0
    for nm in relem:
        if nm in elem:
            shape.append(sz[nm])
        else:
            assert op == "repeat", f"new axis {nm} in {pattern}"
            shape.append(sizes[nm])
    view = []
    for nm in relem:
        view.append(sz[nm] if nm in elem else 1)
    x = x.reshape(view).expand(shape) if relem else x.reshape(())
    return x.reshape([math.prod(shape[relem.index(nm)] for nm in g) for g in rgroups]) if rgroups else x


def rearrange(x, pattern, **sizes):
    return _apply(x, pattern, "rearrange", sizes)


def repeat(x, pattern, **sizes):
    return _apply(x, pattern, "repeat", sizes).contiguous()


def reduce(x, pattern, reduction, **sizes):
    assert reduction == "sum", reduction
    return _apply(x, pattern, "reduce", sizes)


def pack(tensors, pattern):
    names = pattern.split()
    star = names.index("*")
    before, after = star, len(names) - star - 1
    shapes, flat = [], []
    for t in tensors:
        mid = t.shape[before:t.dim() - after]
        shapes.append(tuple(mid))
        flat.append(t.reshape(*t.shape[:before], math.prod(mid), *t.shape[t.dim() - after:]))
    import torch
    return torch.cat(flat, dim=before), shapes


def unpack(x, shapes, pattern):
    names = pattern.split()
    star = names.index("*")
    after = len(names) - star - 1
    out, off = [], 0
    for s in shapes:
        n = math.prod(s)
        part = x.narrow(star, off, n)
        off += n
        out.append(part.reshape(*x.shape[:star], *s, *x.shape[x.dim() - after:]))
    return out
