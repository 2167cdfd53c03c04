"""The embedding models (one ``forward(user_idx, item_idx)`` contract) and their files: saving,
loading, factor tables, and the published model's spec and meta."""
