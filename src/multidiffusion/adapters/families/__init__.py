"""One module per model family, and the registry that lists them."""
