"""Optimizers and learning-rate schedules of the training loop.

:func:`make_optimizer` builds SGD with momentum, Adam, AdamW, or a sparse path for large tables
(``sparse_adam``, ``sparse_sgd``), always as an :class:`Optimizers` so that the loop steps one
object whatever the optimizer needs underneath; :class:`Schedule` steps the learning rate once per
batch over every optimizer of it. Both answer ``state_dict``/``load_state_dict`` for checkpoints.

``sparse_adam`` is the default: a step reads and writes only the rows a batch touched (lazy Adam),
so its cost follows the batch, not the tables, and large batches pay on the CPU. It runs as
:class:`RowAdam`: torch's SparseAdam arithmetic, with the batch's gradient rows summed by a count
of each row rather than a sort (``coalesce``) and the moments updated on those rows alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recspark.core.torch_utils import unwrap

OPTIMIZERS = ("sgd", "adam", "adamw", "sparse_adam", "sparse_sgd")
SPARSE_OPTIMIZERS = ("sparse_adam", "sparse_sgd")
SCHEDULES = ("one_cycle", "cosine", "constant")


def is_sparse_optimizer(name: str) -> bool:
    """Whether ``train.optimizer`` needs the model built with sparse embedding gradients."""
    return name in SPARSE_OPTIMIZERS


def summed_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a sparse gradient touches (ascending) and each one's summed gradient.

    What ``grad.coalesce()`` gives, without its sort: the rows are found by counting the indices
    (``bincount``, linear in the batch and the table's length), and each lookup's gradient is
    added into its row's slot. A batch of 65,536 lookups of a 100,000-row table sums in about
    half the time of a sort.
    """
    if grad.is_coalesced() or grad.sparse_dim() != 1:
        grad = grad.coalesce()
        return grad._indices()[0], grad._values()
    indices, values = grad._indices()[0], grad._values()
    counts = torch.bincount(indices, minlength=grad.shape[0])
    touched = counts > 0
    rows = touched.nonzero().squeeze(1)
    slots = torch.cumsum(touched, 0).sub_(1)
    summed = values.new_zeros((len(rows), *values.shape[1:]))
    return rows, summed.index_add_(0, slots[indices], values)


class RowAdam(torch.optim.SparseAdam):
    """Lazy Adam over sparse gradients: :class:`torch.optim.SparseAdam`'s arithmetic, state and
    checkpoints, computed on the touched rows alone.

    SparseAdam coalesces each gradient (a sort of every lookup), then reads and writes the
    moments through sparse tensors, several passes over the batch's rows; here the rows are summed
    by :func:`summed_rows` and the moments and weights of those rows are gathered once, updated
    in place and scattered back. The numbers are SparseAdam's (up to the order in which a row's
    repeated lookups are added).
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not param.grad.is_sparse:
                    raise RuntimeError("sparse_adam needs sparse gradients: use adam instead")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                grad = -param.grad if group.get("maximize", False) else param.grad
                rows, summed = summed_rows(grad)
                if summed.numel() == 0:
                    continue
                correction1, correction2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                step_size = float(group["lr"]) * math.sqrt(correction2) / correction1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if len(rows) == len(param):
                    # Every row touched (an item table under a large batch): the lazy update is
                    # the dense one, done in place with no gather or scatter.
                    exp_avg.lerp_(summed, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(summed, summed, value=1 - beta2)
                    denominator = exp_avg_sq.sqrt().add_(group["eps"])
                    param.addcdiv_(exp_avg, denominator, value=-step_size)
                    continue
                average = exp_avg.index_select(0, rows).lerp_(summed, 1 - beta1)
                square = exp_avg_sq.index_select(0, rows)
                square.mul_(beta2).addcmul_(summed, summed, value=1 - beta2)
                exp_avg.index_copy_(0, rows, average)
                exp_avg_sq.index_copy_(0, rows, square)
                update = average.div_(square.sqrt_().add_(group["eps"]))
                param.index_add_(0, rows, update, alpha=-step_size)
        return loss


class Optimizers:
    """One or more torch optimizers stepped as one.

    ``sparse_adam`` needs two: :class:`RowAdam` (SparseAdam's arithmetic) for the embedding
    tables (sparse gradients) and Adam for any dense layers. The object answers the parts of the
    optimizer interface the loop uses: ``zero_grad``, ``step``, ``param_groups``, ``state_dict``.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        if len(states) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer does not match train.optimizer")
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)


def _groups(params: list[nn.Parameter], head: set[int], lr: float, head_lr_scale: float) -> list:
    """``params`` as optimizer groups: the ranking head's (ids in ``head``) at ``lr x
    head_lr_scale``, the rest at ``lr``; each group records its ``lr_scale`` for the schedule."""
    rest = [p for p in params if id(p) not in head]
    heads = [p for p in params if id(p) in head]
    groups = [{"params": rest, "lr": lr, "lr_scale": 1.0}] if rest else []
    if heads:
        groups.append({"params": heads, "lr": lr * head_lr_scale, "lr_scale": head_lr_scale})
    return groups


def make_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    head_lr_scale: float = 1.0,
) -> Optimizers:
    """SGD with momentum, Adam, AdamW, or a sparse path for large tables.

    ``sparse_adam`` runs :class:`RowAdam` over the embedding tables and Adam over dense layers;
    ``sparse_sgd`` runs SGD with momentum over all of them (SGD accepts sparse gradients). Both
    need a model built with ``sparse=True``, and touch only the rows a batch uses, so a step costs
    the batch, not the table. ``weight_decay`` here is the optimizer's decay of every weight. The
    weights of a ranking head (:meth:`~recspark.model.base.EmbeddingModel.head_parameters`)
    learn at ``lr x head_lr_scale`` (``lists.head_lr_scale``).
    """
    core = unwrap(model)
    params = [p for p in core.parameters() if p.requires_grad]
    head = {id(p) for p in getattr(core, "head_parameters", list)()}

    def groups(subset: list[nn.Parameter]) -> list[dict]:
        return _groups(subset, head, lr, head_lr_scale)

    if name == "sgd":
        return Optimizers(
            [torch.optim.SGD(groups(params), lr=lr, momentum=momentum, weight_decay=weight_decay)]
        )
    if name == "adam":
        return Optimizers([torch.optim.Adam(groups(params), lr=lr, weight_decay=weight_decay)])
    if name == "adamw":
        return Optimizers([torch.optim.AdamW(groups(params), lr=lr, weight_decay=weight_decay)])
    if name in SPARSE_OPTIMIZERS:
        if weight_decay:
            raise ValueError(
                f"{name} cannot decay sparse rows: set train.optimizer_weight_decay=0 and use "
                "train.weight_decay (the per-batch L2 penalty) instead"
            )
        sparse = [
            p
            for m in unwrap(model).modules()
            if getattr(m, "sparse", False)
            for p in m.parameters()
        ]
        if not sparse:
            raise ValueError(f"{name} needs a model built with sparse=True embeddings")
        if name == "sparse_sgd":
            return Optimizers([torch.optim.SGD(groups(params), lr=lr, momentum=momentum)])
        sparse_ids = {id(p) for p in sparse}
        dense = [p for p in params if id(p) not in sparse_ids]
        optimizers: list[torch.optim.Optimizer] = [RowAdam(groups(sparse), lr=lr)]
        if dense:
            optimizers.append(torch.optim.Adam(groups(dense), lr=lr))
        return Optimizers(optimizers)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


class Schedule:
    """A per-batch learning-rate schedule over every optimizer of an :class:`Optimizers`.

    ``one_cycle``: torch's OneCycleLR over the whole run (warm up for 30% of the steps, then anneal;
    momentum cycles the other way). ``cosine``: cosine annealing with warm restarts, the first
    cycle ``restart_epochs`` epochs long, each next one ``restart_mult`` times longer.
    ``constant``: ``lr`` throughout. Steps beyond the planned total are ignored, so an extra batch
    never makes one-cycle raise.
    """

    def __init__(
        self,
        optimizers: Optimizers,
        name: str,
        lr: float,
        epochs: int,
        steps_per_epoch: int,
        *,
        restart_epochs: int = 1,
        restart_mult: int = 1,
    ):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; choose one of {SCHEDULES}")
        steps_per_epoch = max(1, steps_per_epoch)
        self.name = name
        self.last_epoch = 0
        self.total_steps = epochs * steps_per_epoch if name == "one_cycle" else math.inf
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] = []
        for optimizer in optimizers.optimizers:
            if name == "one_cycle" and epochs > 0:
                # SGD without momentum has none to cycle; one-cycle would switch it on.
                cycle = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
                self.schedulers.append(
                    torch.optim.lr_scheduler.OneCycleLR(
                        optimizer,
                        max_lr=[lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups],
                        total_steps=int(self.total_steps),
                        cycle_momentum=cycle,
                    )
                )
            elif name == "cosine":
                self.schedulers.append(
                    torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                        optimizer, T_0=restart_epochs * steps_per_epoch, T_mult=restart_mult
                    )
                )

    def step(self) -> None:
        if self.last_epoch >= self.total_steps:
            return
        for scheduler in self.schedulers:
            scheduler.step()
        self.last_epoch += 1

    def state_dict(self) -> dict:
        return {
            "last_epoch": self.last_epoch,
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["last_epoch"]
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
