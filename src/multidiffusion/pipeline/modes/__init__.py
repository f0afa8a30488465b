"""One module per mode of the facade: regions, image inputs, sync; each turns checked settings into a run."""
