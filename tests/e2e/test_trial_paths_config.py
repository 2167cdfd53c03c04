"""Defects of a new-user trial: an alias-bomb config, ``#`` in ``paths.root``, ``~`` in ``--set``.

* A YAML config whose aliases expand to a billion values ("billion laughs") is refused with a
  short :class:`ConfigError` before anything expands it, from a file and from ``--set`` alike,
  and a bad value's message never carries its whole repr.
* ``--set paths.root=~/x`` expands ``~`` as a config file does.
* A ``paths.root`` holding ``#`` works through every stage: petastorm once read it as a URL and
  cut the path at ``#``.
"""

from __future__ import annotations

import os

import pandas as pd

from tests.conftest import run_quietly, tiny_overrides


def test_a_root_with_a_hash_works_through_every_stage(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path cut at "#" would land here or beside the root
    root = tmp_path / "team#1" / "runs"
    overrides = tiny_overrides(
        root,
        **{
            "synthetic.users": 200,
            "synthetic.items": 100,
            "synthetic.ratings": 5000,
            "train.epochs": 1,
            "train.allow_worse": "true",  # one epoch on little data: this test is about paths
            "evaluate.baselines": "[]",
        },
    )
    summaries = {}
    for command in ("generate", "prepare", "train", "score", "evaluate"):
        status, summary = run_quietly(command, overrides)
        assert status == 0, summary
        assert summary["status"] == "ok" and summary["command"] == command
        summaries[command] = summary
    day = "2026-01-15"
    for relative in (
        "data/ratings",
        f"prepared/{day}/train",
        f"models/{day}",
        f"recommendations/run_date={day}/_SUCCESS",
        f"evaluation/{day}",
    ):
        assert (root / relative).exists(), relative
    for summary in summaries.values():
        for output in summary["outputs"].values():
            if isinstance(output, str) and os.sep in output:
                assert "team#1" in output, (summary["command"], output)
    assert summaries["train"]["counts"]["train"] == summaries["prepare"]["counts"]["train"]
    users = pd.read_parquet(root / "prepared" / day / "user_index")
    status, summary = run_quietly("recommend", [*overrides, f"recommend.user={users.user_id[0]}"])
    assert status == 0, summary
    assert summary["recommendations"]
    assert sorted(os.listdir(tmp_path)) == ["team#1"]  # nothing at a truncated path ("team")
