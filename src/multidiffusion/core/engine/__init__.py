"""The engine: views, weights, the crop/paste pair, fusion (Eq. 5), the one sampling loop and its helpers."""
