"""recspark's own training loop and scoring kernel beside plain torch, on synthetic tensors.

Not a test: a measurement to run by hand, on a GPU machine (or the CPU, at small sizes). It
imports nothing from pyspark, petastorm or pydantic, so it runs where only torch, numpy and
pyarrow are installed (the lent GPU machines have no Java). Every case runs the project's code and
a plain-torch reference of the same sizes in the same process and prints both and their ratio:

- ``epoch_memory``: one dot_bias epoch of :func:`recspark.train.loop.train_epoch` over batches
  sliced from tensors already on the device, against a hand-written biased MF step (embeddings,
  dot, biases, sigmoid into ``y_range``, MSE, Adam);
- ``epoch_parquet``: the same epoch fed from Parquet row groups read by pyarrow, through the
  overlap wrapper (:class:`recspark.train.prefetch.Prefetcher`), against the in-memory epoch;
- ``top_k``: top-N for every user through :func:`recspark.serve.kernel.recommend_batches` (Arrow
  batches in, as a scoring task receives them; the broadcast user table; seen items excluded)
  at ``--users-per-block`` (``auto`` where the kernel sizes blocks itself), against plain torch:
  the factors on the device, one matrix product, mask and ``topk`` per block of users.

Example (the sizes of issue 17's table)::

    python benchmarks/bench_gpu.py --ratings 25000000 --users 500000 --items 50000 \\
        --factors 32 --batch-size 65536 --score-users 1000000 --score-items 50000 --score-factors 64

On this repository's 2-core CPU machine, small sizes show the code runs::

    .venv/bin/python benchmarks/bench_gpu.py --ratings 400000 --users 20000 --items 5000 \\
        --score-users 20000 --score-items 5000 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recspark.core.constants import ITEM_IDX, ITEMS, RATING, USER_IDX  # noqa: E402
from recspark.model.registry import build_model  # noqa: E402
from recspark.model.saving import model_bytes  # noqa: E402
from recspark.model.spec import make_spec  # noqa: E402
from recspark.serve.kernel import UserTable, recommend_batches  # noqa: E402
from recspark.train.optim import make_optimizer  # noqa: E402
from recspark.train.prefetch import Prefetcher  # noqa: E402
from recspark.train.steps import train_epoch  # noqa: E402

Y_RANGE = (1.0, 5.5)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Result = TypeVar("Result")


def weight(model: nn.Module, table: str) -> torch.Tensor:
    """The ``weight`` of the model's embedding table ``table`` (``user_factors``, ...)."""
    found = model.get_submodule(table).weight
    assert isinstance(found, torch.Tensor)
    return found


def timed(function: Callable[[], Result], device: torch.device) -> tuple[float, Result]:
    synchronize(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - started, result


def planted_ratings(ratings: int, users: int, items: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rank-8 planted ratings in [1, 5] with power-law item popularity."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0, 0.5, (users, 8)).astype(np.float32)
    item_factors = rng.normal(0, 0.5, (items, 8)).astype(np.float32)
    user_idx = rng.integers(0, users, ratings, dtype=np.int64)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    item_idx = rng.choice(items, ratings, p=popularity / popularity.sum()).astype(np.int64)
    raw = 3.5 + np.einsum("ij,ij->i", user_factors[user_idx], item_factors[item_idx])
    rating = np.clip(np.rint(raw + rng.normal(0, 0.5, ratings)), 1, 5).astype(np.float32)
    return {USER_IDX: user_idx, ITEM_IDX: item_idx, RATING: rating}


# -- training ------------------------------------------------------------------------------------


def device_batches(data: dict[str, torch.Tensor], batch_size: int):
    rows = len(data[RATING])
    for start in range(0, rows, batch_size):
        yield {name: column[start : start + batch_size] for name, column in data.items()}


def recspark_epoch(data, args, device) -> float:
    torch.manual_seed(0)
    model = build_model(
        make_spec("dot_bias", args.users, args.items, factors=args.factors, y_range=Y_RANGE)
    ).to(device)
    optimizer = make_optimizer(model, "adam", lr=args.lr)
    seconds, _ = timed(
        lambda: train_epoch(model, device_batches(data, args.batch_size), optimizer, None, device),
        device,
    )
    return seconds


class PlainBiasedMF(nn.Module):
    """The reference: what a person would write in plain torch for the same model."""

    def __init__(self, users: int, items: int, factors: int):
        super().__init__()
        self.user = nn.Embedding(users, factors)
        self.item = nn.Embedding(items, factors)
        self.user_bias = nn.Embedding(users, 1)
        self.item_bias = nn.Embedding(items, 1)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, 0, 0.01)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raw = (self.user(users) * self.item(items)).sum(1)
        raw = raw + self.user_bias(users).squeeze(1) + self.item_bias(items).squeeze(1)
        low, high = Y_RANGE
        return torch.sigmoid(raw) * (high - low) + low


def plain_epoch(data, args, device) -> float:
    torch.manual_seed(0)
    model = PlainBiasedMF(args.users, args.items, args.factors).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def run():
        for batch in device_batches(data, args.batch_size):
            loss = nn.functional.mse_loss(model(batch[USER_IDX], batch[ITEM_IDX]), batch[RATING])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(run, device)[0]


def parquet_epoch(folder: Path, args, device) -> float:
    """The epoch fed from Parquet row groups (pyarrow reads, the Prefetcher overlaps)."""
    torch.manual_seed(0)
    model = build_model(
        make_spec("dot_bias", args.users, args.items, factors=args.factors, y_range=Y_RANGE)
    ).to(device)
    optimizer = make_optimizer(model, "adam", lr=args.lr)

    def read():
        for path in sorted(folder.glob("*.parquet")):
            reader = pq.ParquetFile(path)
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group)
                columns = {
                    name: table.column(name).to_numpy() for name in (USER_IDX, ITEM_IDX, RATING)
                }
                for start in range(0, table.num_rows, args.batch_size):
                    yield {name: c[start : start + args.batch_size] for name, c in columns.items()}

    def run():
        with Prefetcher(read(), device, depth=4) as batches:
            return train_epoch(model, batches, optimizer, None, device)

    return timed(run, device)[0]


# -- scoring -------------------------------------------------------------------------------------


def scoring_case(args, device) -> tuple[float, float, int]:
    """(recspark seconds, plain torch seconds, users whose lists differ) for top-N of every user."""
    torch.manual_seed(0)
    users, items, factors = args.score_users, args.score_items, args.score_factors
    model = build_model(make_spec("dot_bias", users, items, factors=factors, y_range=Y_RANGE))
    with torch.no_grad():
        for table in ("user_factors", "item_factors", "item_bias"):
            weight(model, table).normal_(0, 0.3)
    rng = np.random.default_rng(1)
    seen_counts = rng.integers(0, args.seen_per_user + 1, users)
    offsets = np.zeros(users + 1, dtype=np.int32)
    np.cumsum(seen_counts, out=offsets[1:])
    seen_items = rng.integers(0, items, int(offsets[-1]), dtype=np.int32)
    user_table = UserTable.of(model)
    light = copy.deepcopy(model)
    light.cut_users()
    payload = model_bytes(
        light,
        {
            "kind": "dot_bias",
            "n_users": 1,
            "n_items": items,
            "factors": factors,
            "y_range": list(Y_RANGE),
        },
        {},
    )
    rows_per_batch = 65536
    batches = [
        pa.RecordBatch.from_arrays(
            [
                pa.array(np.arange(start, min(start + rows_per_batch, users), dtype=np.int32)),
                pa.ListArray.from_arrays(
                    pa.array(
                        offsets[start : min(start + rows_per_batch, users) + 1] - offsets[start]
                    ),
                    pa.array(
                        seen_items[offsets[start] : offsets[min(start + rows_per_batch, users)]]
                    ),
                ),
            ],
            names=[USER_IDX, ITEMS],
        )
        for start in range(0, users, rows_per_batch)
    ]
    setting = "cuda" if device.type == "cuda" else "cpu"
    block = args.users_per_block

    def recspark_run():
        return list(
            recommend_batches(iter(batches), payload, args.top_n, block, setting, users=user_table)
        )

    recommend_batches(
        iter(batches[:1]), payload, args.top_n, block, setting, users=user_table
    )  # warm
    ours_seconds, ours = timed(recspark_run, device)

    user_vectors = weight(model, "user_factors").detach().to(device)
    item_vectors = weight(model, "item_factors").detach().to(device)
    item_bias = weight(model, "item_bias").detach().reshape(-1).to(device)
    user_bias = weight(model, "user_bias").detach().reshape(-1).to(device)
    seen_rows = torch.as_tensor(np.repeat(np.arange(users), seen_counts), device=device)
    seen_cols = torch.as_tensor(seen_items.astype(np.int64), device=device)
    offsets_t = torch.as_tensor(offsets.astype(np.int64), device=device)

    def plain_run():
        lists = []
        for start in range(0, users, args.reference_block):
            stop = min(start + args.reference_block, users)
            scores = user_vectors[start:stop] @ item_vectors.T + item_bias
            low, high = int(offsets_t[start]), int(offsets_t[stop])
            scores[seen_rows[low:high] - start, seen_cols[low:high]] = -torch.inf
            values, index = torch.topk(scores, args.top_n, dim=1)
            raw = values + user_bias[start:stop, None]
            lists.append((index, torch.sigmoid(raw) * (Y_RANGE[1] - Y_RANGE[0]) + Y_RANGE[0]))
        return lists

    plain_run()  # warm
    plain_seconds, plain = timed(plain_run, device)
    ours_items = np.concatenate([b.column(ITEM_IDX).to_numpy() for b in ours]).reshape(users, -1)
    plain_items = torch.cat([index for index, _ in plain]).cpu().numpy()
    differ = int((np.sort(ours_items, 1) != np.sort(plain_items, 1)).any(1).sum())
    return ours_seconds, plain_seconds, differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ratings", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=65_536)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--row-group", type=int, default=1_000_000)
    parser.add_argument("--score-users", type=int, default=100_000)
    parser.add_argument("--score-items", type=int, default=20_000)
    parser.add_argument("--score-factors", type=int, default=32)
    parser.add_argument("--seen-per-user", type=int, default=40)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--users-per-block", type=int, default=128)
    parser.add_argument("--reference-block", type=int, default=8192)
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "parquet", "score"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({device_name}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = []
    if "train" not in args.skip or "parquet" not in args.skip:
        data = planted_ratings(args.ratings, args.users, args.items)
        on_device = {name: torch.as_tensor(c).to(device) for name, c in data.items()}
        on_device[USER_IDX], on_device[ITEM_IDX] = (
            on_device[USER_IDX].long(),
            on_device[ITEM_IDX].long(),
        )
        recspark_epoch(on_device, args, device)  # warm-up: allocator, kernels
        memory = recspark_epoch(on_device, args, device)
        if "train" not in args.skip:
            plain = plain_epoch(on_device, args, device)
            rows.append(("dot_bias epoch, in memory", memory, "plain torch biased MF", plain))
        if "parquet" not in args.skip:
            with tempfile.TemporaryDirectory() as folder:
                table = pa.table(
                    {name: c.astype(np.int32) if name != RATING else c for name, c in data.items()}
                )
                pq.write_table(
                    table, Path(folder) / "part-0.parquet", row_group_size=args.row_group
                )
                fed = parquet_epoch(Path(folder), args, device)
            rows.append(
                ("dot_bias epoch, Parquet + Prefetcher", fed, "the same epoch in memory", memory)
            )
    if "score" not in args.skip:
        ours, plain, differ = scoring_case(args, device)
        rows.append(
            (
                f"top-{args.top_n}, {args.score_users} users x {args.score_items} items, "
                f"{args.users_per_block}/block",
                ours,
                "plain torch matmul+mask+topk",
                plain,
            )
        )
        print(f"top-k lists that differ from plain torch: {differ} of {args.score_users}")
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  {'recspark s':>10}  {'reference s':>11}  {'ratio':>6}  reference")
    for name, ours, reference_name, reference in rows:
        ratio = ours / reference
        print(
            f"{name:<{width}}  {ours:>10.3f}  {reference:>11.3f}  {ratio:>6.2f}  {reference_name}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
