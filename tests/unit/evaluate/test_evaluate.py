"""evaluate end to end on a planted model: its figures, the baselines beside it, the report folder.
The tests that need no JVM; those with Spark, the CLI's jobs or subprocesses are in
tests/e2e/test_evaluate.py.
"""

from __future__ import annotations


def test_training_curves_come_from_the_history(tmp_path):
    from recspark.evaluate.report import training_curves

    history = [
        {"epoch": e, "train_loss": 1.0 / e, "validation_loss": 1.1 / e, "validation_rmse": 1.05 / e}
        for e in (1, 2, 3)
    ]
    assert training_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not training_curves([], tmp_path / "none.png")
