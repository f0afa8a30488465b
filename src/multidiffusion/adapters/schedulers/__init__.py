"""diffusers schedulers by name, the flow-matching shift, and the inverting scheduler."""
