"""dig2dig: Dig2DIG diffusion image fusion (see README)."""
