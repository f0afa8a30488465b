"""Files the interfaces write: PNGs with their recipe, segmentation legends."""
