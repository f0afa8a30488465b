"""What a family hands to the pipeline: the loaded model and its differentiable parts."""
