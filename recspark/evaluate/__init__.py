"""evaluate's room: metrics, baselines (global mean, biases, ALS, EASE), the evaluation and
benchmark reports, plots and exploration."""
