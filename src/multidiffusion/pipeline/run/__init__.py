"""The run every mode shares: conditions, noise, the engine with progress, memory, checkpoints, ranks, output."""
