"""``sparse_adam``'s :class:`RowAdam` against torch's SparseAdam, and the run's phase clock."""

from __future__ import annotations

import pytest
import torch

from recspark.train.optim import RowAdam, summed_rows
from recspark.train.phases import PHASES, PhaseClock


def _sparse(index: list[int], values: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.tensor([index]), values, (rows, values.shape[1]))


def test_summed_rows_are_the_coalesced_gradient():
    values = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    grad = _sparse([4, 1, 4, 0, 1, 4], values, 7)
    rows, summed = summed_rows(grad)
    coalesced = grad.coalesce()
    assert rows.tolist() == coalesced.indices()[0].tolist() == [0, 1, 4]
    assert torch.equal(summed, coalesced.values())


@pytest.mark.parametrize("table_rows", [40, 5])  # some rows untouched; every row touched
def test_row_adam_steps_as_sparse_adam_does(table_rows):
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(table_rows, 4, generator=generator)
    theirs, ours = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    sparse_adam, row_adam = torch.optim.SparseAdam([theirs], lr=0.05), RowAdam([ours], lr=0.05)
    for _ in range(6):
        index = torch.randint(0, table_rows, (30,), generator=generator).tolist()
        values = torch.randn(30, 4, generator=generator)
        theirs.grad, ours.grad = (
            _sparse(index, values, table_rows),
            _sparse(index, values, table_rows),
        )
        sparse_adam.step()
        row_adam.step()
    assert not torch.equal(ours.detach(), start)
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(row_adam.state[ours][key], sparse_adam.state[theirs][key])
    # Checkpoints are interchangeable: the same state, under the same keys.
    assert row_adam.state[ours]["step"] == sparse_adam.state[theirs]["step"] == 6
    RowAdam([torch.nn.Parameter(start.clone())], lr=0.05).load_state_dict(sparse_adam.state_dict())


def test_row_adam_refuses_a_dense_gradient():
    weight = torch.nn.Parameter(torch.zeros(3, 2))
    weight.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        RowAdam([weight]).step()


def test_the_phase_clock_counts_waits_and_reports_every_phase():
    clock = PhaseClock()
    assert list(clock.waited(iter(range(5)))) == [0, 1, 2, 3, 4]
    clock.add("step", 2.0)
    with clock.timing("write"):
        pass
    report = clock.report()
    assert tuple(report) == PHASES
    assert report["step"] == 2.0 and report["feed"] >= 0 and report["other"] >= 0
    with pytest.raises(ValueError, match="unknown phase"):
        clock.add("reading", 1.0)
