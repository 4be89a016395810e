def fatal(*a): raise SystemExit(a)
