"""Networks of the engine: the Stage I denoiser and its encoder (Stage II adds ``seg_unet``)."""
