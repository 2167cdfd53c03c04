"""evaluate's room: metrics, baselines (global mean, biases, ALS), reports, plots and exploration."""
