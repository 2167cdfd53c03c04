"""The processes of a run as the training loop sees them: a rank, a world size, sums, barriers.

:class:`LocalProcess` is the single-process case of the collective operations
:func:`recspark.train.loop.fit` uses; :class:`recspark.train.distributed.TorchProcessGroup`
answers the same calls across the processes of a data-parallel run. Kept apart from both so that
the loop and the distributed wrapper import it without importing each other's concerns.
"""

from __future__ import annotations

from torch import nn


class LocalProcess:
    """The single-process case of the collective operations :func:`~recspark.train.loop.fit` uses.

    :class:`recspark.train.distributed.TorchProcessGroup` answers the same calls across processes.
    """

    rank = 0
    world_size = 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, batch_weight: float) -> nn.Module:
        """The module to train; ``batch_weight`` is this process's share of a global batch."""
        return model

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes."""
        return list(values)

    def barrier(self) -> None:
        """Wait until every process gets here."""
