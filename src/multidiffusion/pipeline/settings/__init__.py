"""The settings of a run: defaults, checks, the recipe recorded in a PNG and read back."""
