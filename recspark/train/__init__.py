"""train's room: one training loop, its objectives (rating, ranking) as per-batch losses,
optimizers and schedules, the Petastorm feed, checkpoints and data-parallel training."""
