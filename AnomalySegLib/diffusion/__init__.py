"""Stage I diffusion: noise, schedule and one-pass pseudo-healthy reconstruction."""
