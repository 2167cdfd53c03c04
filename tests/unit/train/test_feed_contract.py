"""The feed contract (``recspark.train.feeding``), checked against each feed this stack runs.

``petastorm`` where petastorm imports (the pinned stack), ``arrow`` everywhere. Each epoch yields
every row exactly once across the shards; the shards are disjoint and are the row groups
petastorm gives them; the order is a function of the seed (and the shard) alone, read ahead or
not; the feed draws from no global generator.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recspark.core.constants import ITEM_IDX, RATING, USER_IDX
from recspark.core.errors import ConfigError
from recspark.train.feeding import (
    epoch_row_groups,
    open_feed,
    petastorm_available,
    resolve_feed,
    row_groups,
    shard_row_groups,
)

FEEDS = ["arrow"] + (["petastorm"] if petastorm_available() else [])
ROWS = 9000
# Uneven row groups over three files, so that shards hold different row counts.
GROUPS_PER_FILE = ((1500, 700, 1300), (900, 2000), (1100, 1500))


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> str:
    """A train folder whose ``user_idx`` is the row's number, in 7 row groups over 3 files."""
    folder = tmp_path_factory.mktemp("contract") / "train"
    folder.mkdir()
    start = 0
    for number, groups in enumerate(GROUPS_PER_FILE):
        rows = np.arange(start, start + sum(groups), dtype=np.int32)
        table = pa.table(
            {USER_IDX: rows, ITEM_IDX: rows % 50, RATING: (rows % 5 + 1).astype(np.float32)}
        )
        with pq.ParquetWriter(folder / f"part-{number:05d}.parquet", table.schema) as writer:
            offset = 0
            for size in groups:
                writer.write_table(table.slice(offset, size))
                offset += size
        start += sum(groups)
    (folder / "_SUCCESS").touch()
    assert start == ROWS and len(row_groups(str(folder))) == 7
    return str(folder)


def epoch(
    path: str,
    feed: str,
    seed: int = 11,
    shard=None,
    count=None,
    shuffle=True,
    prefetch: int = 2,
    batch_size: int = 512,
    buffer: int = 2500,
) -> list[list[int]]:
    with open_feed(
        path,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        shard=shard,
        shard_count=count,
        shuffle_buffer=buffer,
        prefetch=prefetch,
        feed=feed,
    ) as batches:
        out = []
        for batch in batches:
            assert batch[USER_IDX].dtype == torch.long and batch[RATING].dtype == torch.float32
            assert torch.equal(batch[ITEM_IDX], batch[USER_IDX] % 50)  # rows stay whole
            out.append(batch[USER_IDX].tolist())
        return out


def flat(batches: list[list[int]]) -> list[int]:
    return [row for batch in batches for row in batch]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("count", [None, 2, 3])
def test_every_row_exactly_once_across_disjoint_shards(numbered, feed, count):
    shards = [None] if count is None else list(range(count))
    seen = [flat(epoch(numbered, feed, shard=s, count=count)) for s in shards]
    everything = sorted(row for rows in seen for row in rows)
    assert everything == list(range(ROWS))
    for a in range(len(seen)):
        for b in range(a + 1, len(seen)):
            assert not set(seen[a]) & set(seen[b])


@pytest.mark.parametrize("feed", FEEDS)
def test_the_order_is_a_function_of_the_seed_alone(numbered, feed):
    read_ahead = epoch(numbered, feed, seed=11)
    torch.manual_seed(1)  # the global generators' state has no say
    np.random.seed(1)
    assert epoch(numbered, feed, seed=11, prefetch=0) == read_ahead
    assert flat(epoch(numbered, feed, seed=12)) != flat(read_ahead)
    rows = flat(read_ahead)
    assert rows != sorted(rows)
    assert len({row // 1500 for row in read_ahead[0]}) > 1  # the buffer mixes row groups
    # Without shuffling the rows come in piece order.
    assert flat(epoch(numbered, feed, shuffle=False)) == list(range(ROWS))


@pytest.mark.parametrize("feed", FEEDS)
def test_the_feed_draws_from_no_global_generator(numbered, feed):
    torch.manual_seed(3)
    np.random.seed(3)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    epoch(numbered, feed, seed=5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


def test_shards_hold_the_row_groups_petastorm_gives_them(numbered):
    counts = row_groups(numbered)
    starts = np.cumsum([0, *counts])
    for count in (2, 3):
        for shard in range(count):
            groups = shard_row_groups(len(counts), 11, shard, count)
            assert sorted(groups) == [g for g in range(len(counts)) if g % count == shard]
            expected = sorted(row for g in groups for row in range(starts[g], starts[g + 1]))
            for feed in FEEDS:
                assert sorted(flat(epoch(numbered, feed, shard=shard, count=count))) == expected


@pytest.mark.skipif(not petastorm_available(), reason="petastorm does not import on this stack")
def test_both_feeds_visit_the_row_groups_in_the_same_order(numbered):
    """Without the row shuffle, each feed's batches follow its row-group order: the same one."""
    for seed in (3, 11):
        arrow = flat(epoch(numbered, "arrow", seed=seed, buffer=0, batch_size=100))
        petastorm = flat(epoch(numbered, "petastorm", seed=seed, buffer=0, batch_size=100))
        # Rows within a row group stay in order when the buffer holds one batch: compare the
        # sequence of row groups the rows come from.
        starts = np.cumsum([0, *row_groups(numbered)])
        group_of = np.searchsorted(starts, np.array(arrow), side="right") - 1
        other = np.searchsorted(starts, np.array(petastorm), side="right") - 1
        assert list(dict.fromkeys(group_of)) == list(dict.fromkeys(other))
        assert list(dict.fromkeys(group_of)) == epoch_row_groups(7, True, seed, None, None)


def test_the_feed_setting_resolves(monkeypatch):
    assert resolve_feed("arrow") == "arrow"
    assert resolve_feed("auto") == ("petastorm" if petastorm_available() else "arrow")
    with pytest.raises(ConfigError, match=r"train\.feed must be one of"):
        resolve_feed("parquet")
    monkeypatch.setattr("recspark.train.feeding.petastorm_available", lambda: False)
    assert resolve_feed("auto") == "arrow"
    with pytest.raises(ConfigError, match="petastorm does not import"):
        resolve_feed("petastorm")
