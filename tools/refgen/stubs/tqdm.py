def tqdm(x, **k): return x
