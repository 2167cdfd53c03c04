"""prepare's room: reading and checking sources, stable id maps, splits, the synthetic data set,
side information, titles, and the tables a prepared run holds (its manifest and ``rated/``)."""
