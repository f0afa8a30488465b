"""Figures measured on canvases: coherence, seams, a weight-free perceptual statistic."""
