"""One training step of ``dot_bias`` on the CPU, split into forward, backward and optimizer time.

Not a test: the measurement behind the L2 penalty added by rows (issue 17). Random indices over
``--users`` x ``--items`` tables of ``--factors`` columns, one batch of ``--batch`` rows, the loss
the loop uses (MSE plus ``--weight-decay`` times the penalty), on ``--threads`` torch threads;
prints milliseconds per phase and rows per second for:

- ``adam``: dense tables, torch's Adam (fused), penalty through autograd;
- ``torch SparseAdam``: sparse tables, torch's SparseAdam, penalty through autograd (the old
  ``sparse_adam``);
- ``SparseAdam, by rows``: the same with the penalty's gradient added by rows after backward
  (:meth:`EmbeddingModel.add_penalty_gradient`), the old ``sparse_adam``;
- ``sparse_adam``: the same with :class:`~recspark.train.optim.RowAdam` (SparseAdam's arithmetic
  without its sort, issue 31), what ``train`` runs with ``lists.source: ratings``;
- with ``--lists-head``, the default ``lists.source: head`` (:mod:`recspark.train.objectives.joint`,
  100 shared negatives, ``lists.head_weight`` 0.3) three ways: ``head, two passes`` (the rating
  and ranking objectives each over the model), ``head, one pass`` (both heads from one lookup of
  the item rows, what ``train`` runs) and ``head, head_rows`` (the head on the first
  ``--head-rows`` rows, the default; ``head, SparseAdam`` the same stepped by torch's SparseAdam).

Example::

    .venv/bin/python benchmarks/bench_step.py --threads 1 --lists-head
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from recspark.model.registry import build_model
from recspark.model.spec import make_spec
from recspark.train.objectives.base import RunContext
from recspark.train.objectives.joint import JointObjective
from recspark.train.objectives.ranking import RankingObjective, RankingSettings
from recspark.train.objectives.rating import RatingObjective
from recspark.train.optim import RowAdam


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--weight-decay", type=float, default=0.025)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lists-head", action="store_true", help="also time the lists head")
    parser.add_argument("--head-rows", type=int, default=16384)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    users = torch.randint(0, args.users, (args.batch,))
    items = torch.randint(0, args.items, (args.batch,))
    ratings = torch.rand(args.batch) * 4 + 1
    cases = (
        ("adam", False, lambda p: torch.optim.Adam(p, lr=0.01, fused=True), False),
        ("torch SparseAdam", True, lambda p: torch.optim.SparseAdam(list(p), lr=0.01), False),
        ("SparseAdam, by rows", True, lambda p: torch.optim.SparseAdam(list(p), lr=0.01), True),
        ("sparse_adam", True, lambda p: RowAdam(list(p), lr=0.01), True),
    )
    print(
        f"dot_bias {args.users:,} x {args.items:,} x {args.factors}, batch {args.batch:,}, "
        f"{args.threads} thread(s), ms per step (mean of {args.steps})"
    )
    batch = {"user_idx": users, "item_idx": items, "rating": ratings}
    # (name, model, optimizer, penalty by rows, objective, timings of each step)
    runs: list[tuple[str, Any, Any, bool, Any, list[tuple[float, float, float]]]] = []
    spec = make_spec("dot_bias", args.users, args.items, factors=args.factors, y_range=(1.0, 5.5))
    for name, sparse, make, by_rows in cases:
        model = build_model(spec.replace(sparse=sparse))
        runs.append((name, model, make(model.parameters()), by_rows, RatingObjective(), []))
    if args.lists_head:
        for name, head_rows, adam in (
            ("head, two passes", None, RowAdam),
            ("head, one pass", None, RowAdam),
            ("head, SparseAdam", args.head_rows, torch.optim.SparseAdam),
            ("head, head_rows", args.head_rows, RowAdam),
        ):
            model = build_model(spec.replace(sparse=True, lists_head=True))
            objective = JointObjective(RankingObjective(RankingSettings()), 0.3, head_rows)
            objective.start_epoch(model, torch.device("cpu"), RunContext(args.users, args.items))
            if name == "head, two passes":
                # The fallback, each objective's own pass: swapped in on purpose, for timing.
                objective._fused_loss = lambda *_: None  # type: ignore[method-assign]
            optimizer = adam(list(model.parameters()), lr=0.01)
            runs.append((name, model, optimizer, True, objective, []))

    def step(model, optimizer, by_rows, objective) -> tuple[float, float, float]:
        started = time.perf_counter()
        taken = objective.batch_loss(model, batch, torch.device("cpu"))
        loss = taken.loss
        if not by_rows:
            loss = loss + args.weight_decay * model.penalty(users, items)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if by_rows:
            model.add_penalty_gradient(users, items, args.weight_decay, taken.head_rows)
        backward = time.perf_counter()
        optimizer.step()
        done = time.perf_counter()
        return forward - started, backward - forward, done - backward

    # Round robin, so that whatever else the machine does weighs on every case alike.
    for repeat in range(3 + args.steps):
        for _, model, optimizer, by_rows, objective, phases in runs:
            timing = step(model, optimizer, by_rows, objective)
            if repeat >= 3:
                phases.append(timing)
    for name, *_, phases in runs:
        means = [1000 * sum(p[k] for p in phases) / len(phases) for k in range(3)]
        print(
            f"{name:<20} forward {means[0]:7.1f}  backward {means[1]:7.1f}  optimizer "
            f"{means[2]:7.1f}  => {args.batch / sum(means) * 1000:>11,.0f} rows/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
