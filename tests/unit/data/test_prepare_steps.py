"""JVM-free checks of prepare's steps: the input path, counts, split sizes, manifest and gate."""

from __future__ import annotations

import datetime as dt

import pytest

from recspark.core.config import InputConfig, SplitConfig
from recspark.core.errors import BadInputError
from recspark.core.location import Location
from recspark.data import inputs, prepare, quarantine
from recspark.data.prepared import RatingStats
from recspark.data.reasons import NON_NUMERIC_USER, REASONS


def row_counts(good: int, **bad: int) -> quarantine.RowCounts:
    return quarantine.RowCounts(good, {reason: bad.get(reason, 0) for reason in REASONS})


ROWS = {"train": 80, "validation": 15, "cold_start": 5, "user_index": 10, "item_index": 20}


def test_ratings_path_is_the_input_or_the_generated_table(tmp_path):
    assert inputs.ratings_path(InputConfig(path="r.csv"), str(tmp_path)) == "r.csv"
    generated = inputs.ratings_path(InputConfig(format="synthetic"), str(tmp_path))
    assert generated.endswith("ratings")
    with pytest.raises(BadInputError, match=r"input\.path is not set"):
        inputs.ratings_path(InputConfig(format="csv"), str(tmp_path))


def test_wanted_columns_leave_the_rating_out_of_implicit_input():
    assert "rating" in inputs.wanted_columns(InputConfig())
    assert "rating" not in inputs.wanted_columns(InputConfig(implicit=True))
    assert inputs.header_setting("auto") is None and inputs.header_setting(False) is False


def test_precheck_fails_a_given_split_without_its_validation_table(tmp_path):
    with pytest.raises(BadInputError, match=r"input\.validation_path is not set"):
        inputs.precheck_input("r.csv", "csv", {}, split_method="given")
    with pytest.raises(BadInputError, match="one split or the other"):
        inputs.precheck_input(
            "r.csv", "csv", {}, split_method="given", validation_path="t.csv", test_path="t.csv"
        )


def test_prepared_counts_keep_the_summary_keys_in_order():
    counts = prepare.prepared_counts(ROWS, row_counts(104, duplicate_row=3), {"user_id": 4}, False)
    as_dict = counts.to_dict()
    assert list(as_dict) == [
        "users",
        "items",
        "new_users",
        "new_items",
        "input_rows",
        "train",
        "validation",
        "cold_start",
        "quarantined",
        "quarantined_by_reason",
    ]
    assert (as_dict["new_users"], as_dict["new_items"], as_dict["input_rows"]) == (6, 20, 107)
    implicit = prepare.prepared_counts(ROWS, row_counts(104), {}, True).to_dict()
    assert implicit["aggregated_events"] == 4
    # A test split's tables follow the cold-start rows, and count among the written rows.
    rows = {**ROWS, "test": 12, "test_cold_start": 2}
    tested = prepare.prepared_counts(rows, row_counts(120), {}, True).to_dict()
    assert list(tested)[5:10] == ["train", "validation", "cold_start", "test", "test_cold_start"]
    assert tested["aggregated_events"] == 120 - 114


def test_feed_files_and_the_empty_split_check():
    assert prepare.feed_files(10, 2_000_000) == {
        "train": 4,
        "validation": 2,
        "cold_start": 1,
        "test": 2,
        "test_cold_start": 1,
    }
    assert prepare.feed_files(40, 2)["validation"] == prepare.feed_files(40, 2)["test"] == 5
    with pytest.raises(BadInputError, match="the split left train"):
        prepare.check_split({**ROWS, "validation": 0})
    # A test split asked for and left empty fails too; none asked for is not checked.
    with pytest.raises(BadInputError, match="the split left test empty"):
        prepare.check_split({**ROWS, "test": 0, "test_cold_start": 3})
    prepare.check_split(ROWS)


def test_a_test_split_is_asked_for_by_its_fraction_or_its_given_table():
    given = SplitConfig.model_validate({"method": "given"})
    assert prepare.has_test_split(given, InputConfig.model_validate({"test_path": "u1.test"}))
    assert not prepare.has_test_split(given, InputConfig.model_validate({}))
    drawn = SplitConfig.model_validate({"test_fraction": 0.1})
    assert prepare.has_test_split(drawn, InputConfig.model_validate({}))
    assert not prepare.has_test_split(
        SplitConfig.model_validate({}), InputConfig.model_validate({})
    )
    assert prepare.split_table_names(True) == (*prepare.TABLES, "test", "test_cold_start")


def test_split_fractions_must_leave_rows_to_train_on():
    with pytest.raises(ValueError, match="must stay below 1"):
        SplitConfig.model_validate({"validation_fraction": 0.5, "test_fraction": 0.5})
    with pytest.raises(ValueError, match=r"set input\.test_path instead"):
        SplitConfig.model_validate({"method": "given", "test_fraction": 0.2})


def test_the_manifest_holds_the_sections_it_was_prepared_with(tmp_path):
    path = str(tmp_path / "r.csv")
    read = prepare.ReadFacts(path, "csv", True, False, {})
    manifest = prepare.build_manifest(
        run_date=dt.date(2026, 1, 2),
        settings=InputConfig(path=path, implicit=True),
        split=SplitConfig(seed=5),
        row_group_mb=8,
        read=read,
        previous_date=None,
        counts=prepare.prepared_counts(ROWS, row_counts(100), {}, True),
        rows=ROWS,
        train_stats=RatingStats(min=1.0, max=7.0, mean=2.0),
        feed_columns=prepare.FEED_COLUMNS,
    )
    assert manifest.run_date == "2026-01-02" and manifest.split["seed"] == 5
    assert manifest.rating_range == (1.0, 7.0)  # implicit: 1 .. the largest count
    assert manifest.counts["aggregated_events"] == 0 and manifest.users == 10
    assert manifest.input.validation_path is None and manifest.input.implicit


def test_the_gate_message_says_what_to_set(tmp_path):
    counts = row_counts(90, **{NON_NUMERIC_USER: 10})
    message = quarantine._bad_rows_message(counts, 0.01, Location(str(tmp_path)))
    assert "10 of 100 rows are bad" in message and "input.id_type: string" in message
    assert "input.max_bad_fraction=0.01" in message
