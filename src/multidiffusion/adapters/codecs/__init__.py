"""Latents ↔ images: the VAE, tiled VAE, packed-patch codec and the cheap preview map."""
