"""Weight-backed metrics: LPIPS, CLIP score, FID/KID, GIQA."""
