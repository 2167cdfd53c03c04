"""Training objectives: what the loop computes per batch (the loss) and per validation pass."""
