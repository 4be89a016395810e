class OmegaConf: pass
