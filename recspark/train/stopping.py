"""Early stopping: keep the best validation epoch's weights, stop when patience runs out.

The loop (:func:`recspark.train.loop.fit`) calls :func:`track_best` once per epoch with the
objective's validation loss. The best loss, its epoch and weights, and the patience counter live
in the run's :class:`~recspark.train.checkpoints.Checkpoint`, so a resumed run carries on
counting exactly where the killed one stopped.
"""

from __future__ import annotations

from torch import nn

from recspark.train.checkpoints import Checkpoint

#: A loss must fall by more than this to count as an improvement.
MIN_IMPROVEMENT = 1e-7


def track_best(
    state: Checkpoint, loss: float, epoch: int, model: nn.Module, *, patience: int, epochs: int
) -> None:
    """Update ``state`` after ``epoch`` validated to ``loss``.

    An improvement keeps a CPU copy of ``model``'s weights and resets the patience counter;
    otherwise the counter grows, and ``state.stopped_early`` is set once it reaches ``patience``
    (at least 1) before the last of ``epochs``.
    """
    if loss < state.best_loss - MIN_IMPROVEMENT:
        state.best_loss, state.waited, state.best_epoch = loss, 0, epoch
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.waited += 1
        state.stopped_early = state.waited >= max(1, patience) and epoch < epochs
