"""Files a run writes: atomically (a temporary file beside the target, then a rename), with names that fit the file
system, and PNGs that carry their recipe."""
