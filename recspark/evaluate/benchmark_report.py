"""The benchmark's report: what each contender did (:class:`ContenderResult`), the printed tables
and their ratios to the reference contender, and ``benchmark/reports/RUN_DATE/`` on disk.

A printed table is a list of :class:`Column`, built from ``evaluate.k`` by a function appended
to :data:`TABLES`; :func:`format_table` renders one with a ratio line per contender
(:func:`ratios`). :class:`BenchmarkReport` gathers every data set's facts and results;
:func:`write_benchmark` publishes ``benchmark.json`` and ``table.txt`` whole.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recspark.core.location import Location
from recspark.core.storage import Layout, staged, write_json


@dataclass
class ContenderResult:
    """What one contender did on one data set: timings and every metric of :func:`assess`."""

    name: str
    train_seconds: float
    score_seconds: float | None
    metrics: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    def figure(self, key: str) -> Any:
        if key in ("train_seconds", "score_seconds"):
            return getattr(self, key)
        return self.metrics.get(key)


@dataclass(frozen=True)
class Column:
    """One printed column: its header, the figure's key, its format and whether lower is better."""

    header: str
    key: str
    digits: int = 4
    lower_is_better: bool = True
    ratio: bool = True


def accuracy_table(k: int) -> list[Column]:
    """The table issue 6 asks for: accuracy, and time to train and to score everyone."""
    return [
        Column("RMSE", "rmse"),
        Column(f"NDCG@{k}", "ndcg_at_k", lower_is_better=False),
        Column("train s", "train_seconds", 1),
        Column("score s", "score_seconds", 1),
    ]


def ranking_table(k: int) -> list[Column]:
    """The table issue 9 asks for: the top-k lists' quality, every contender on its own lists."""
    return [
        Column(f"NDCG@{k}", "ndcg_at_k", lower_is_better=False),
        Column(f"Precision@{k}", "precision_at_k", lower_is_better=False),
        Column(f"Recall@{k}", "recall_at_k", lower_is_better=False),
        Column(f"MAP@{k}", "map_at_k", lower_is_better=False),
    ]


TABLES: list[Callable[[int], list[Column]]] = [accuracy_table, ranking_table]


def ratios(
    results: list[ContenderResult], reference: str, columns: list[Column]
) -> dict[str, dict[str, float | None]]:
    """Each contender's figures divided by the reference's (time ratios: reference / contender)."""
    base = next((r for r in results if r.name == reference), None)
    out: dict[str, dict[str, float | None]] = {}
    if base is None:
        return out
    for result in results:
        if result.name == reference:
            continue
        entry: dict[str, float | None] = {}
        for column in columns:
            mine, theirs = result.figure(column.key), base.figure(column.key)
            if not column.ratio or mine is None or theirs is None or not (mine and theirs):
                entry[column.key] = None
            elif column.key.endswith("_seconds"):
                entry[column.key] = theirs / mine  # a speed-up: >1 means faster than the reference
            else:
                entry[column.key] = mine / theirs
        out[result.name] = entry
    return out


def format_table(
    rows: dict[str, list[ContenderResult]], columns: list[Column], reference: str
) -> str:
    """A plain-text table: one line per (data set, contender), then a ratio line per contender.

    On a ratio line, accuracy columns are contender / reference and time columns are reference /
    contender (a speed-up: ``2.000x`` is twice as fast as the reference).
    """
    headers = ["data set", "model", *[c.header for c in columns]]
    lines: list[list[str]] = []
    for name, results in rows.items():
        for result in results:
            cells = [name, result.name]
            for column in columns:
                value = result.figure(column.key)
                cells.append("n/a" if value is None else f"{value:.{column.digits}f}")
            lines.append(cells)
        for contender, entry in ratios(results, reference, columns).items():
            cells = [name, f"{contender}/{reference}"]
            for column in columns:
                value = entry.get(column.key)
                suffix = "x" if column.key.endswith("_seconds") else ""
                cells.append("n/a" if value is None else f"{value:.3f}{suffix}")
            lines.append(cells)
    widths = [max(len(row[i]) for row in [headers, *lines]) for i in range(len(headers))]
    render = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [headers, *lines]
    ]
    render.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(render)


#: Figures of every contender in the JSON summary line (benchmark.json keeps all of them).
SUMMARY_KEYS = (
    "rmse",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "map_at_k",
    "train_seconds",
    "score_seconds",
)


def finite(value: Any) -> Any:
    """``value``, or None for a NaN or infinite float (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class DatasetFacts:
    """What ``benchmark.json`` says of one data set: its size, split and where it was prepared,
    and the contenders skipped on it with the reason."""

    users: int
    items: int
    counts: dict[str, Any]
    split: str
    relevance_threshold: float
    root: str
    skipped: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        facts = {
            "users": self.users,
            "items": self.items,
            **self.counts,
            "split": self.split,
            "relevance_threshold": self.relevance_threshold,
            "root": self.root,
        }
        if self.skipped:
            facts["skipped"] = dict(self.skipped)
        return facts


@dataclass
class BenchmarkReport:
    """Every data set's facts and its contenders' results, in the order they ran."""

    run_date: str
    k: int
    reference: str
    facts: dict[str, DatasetFacts] = field(default_factory=dict)
    results: dict[str, list[ContenderResult]] = field(default_factory=dict)

    def tables(self) -> list[list[Column]]:
        return [builder(self.k) for builder in TABLES]

    def text(self) -> str:
        """Every table of :data:`TABLES`, as printed on stderr and kept in ``table.txt``."""
        return "\n\n".join(
            format_table(self.results, columns, self.reference) for columns in self.tables()
        )

    def all_ratios(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """Per data set, each contender's ratios to the reference over every printed column."""
        columns = [column for table in self.tables() for column in table]
        return {name: ratios(rs, self.reference, columns) for name, rs in self.results.items()}

    def as_json(self, text: str) -> dict[str, Any]:
        """``benchmark.json``'s content."""
        return {
            "run_date": self.run_date,
            "k": self.k,
            "reference": self.reference,
            "datasets": {name: facts.as_json() for name, facts in self.facts.items()},
            "results": {
                name: {
                    r.name: {
                        "train_seconds": r.train_seconds,
                        "score_seconds": r.score_seconds,
                        "metrics": r.metrics,
                        "info": r.info,
                    }
                    for r in rs
                }
                for name, rs in self.results.items()
            },
            "ratios": self.all_ratios(),
            "table": text,
        }

    def summary_figures(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per data set and contender, the :data:`SUMMARY_KEYS` of the summary line (NaN and
        infinities as None, which JSON can carry)."""
        return {
            name: {r.name: {key: finite(r.figure(key)) for key in SUMMARY_KEYS} for r in rs}
            for name, rs in self.results.items()
        }


@dataclass(frozen=True)
class BenchmarkFiles:
    """Where the report was published."""

    report: Location
    table: Location


def write_benchmark(layout: Layout, report: BenchmarkReport) -> BenchmarkFiles:
    """Print the tables on stderr and publish ``benchmark/reports/RUN_DATE/`` whole:
    ``benchmark.json`` and ``table.txt``."""
    text = report.text()
    print(text, file=sys.stderr, flush=True)
    final = layout.root / "benchmark" / "reports" / report.run_date
    with staged(layout, final, f"benchmark-{report.run_date}") as staging:
        write_json(staging / "benchmark.json", report.as_json(text))
        (staging / "table.txt").write_text(text + "\n")
    return BenchmarkFiles(final / "benchmark.json", final / "table.txt")
