"""What a run adds to a model: control networks, LoRAs, embeddings, prompt weighting."""
