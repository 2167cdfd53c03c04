"""The embedding models (one ``forward(user_idx, item_idx)`` contract), the factory that builds
them by kind, and their files: saving, loading, factor tables, and the published model's spec and
meta."""
