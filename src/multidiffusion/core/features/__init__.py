"""What rides on the loop as hooks and wrapped denoisers: regions, bootstrapping, SyncDiffusion, the global view,
known regions, extra input channels, per-condition tags."""
