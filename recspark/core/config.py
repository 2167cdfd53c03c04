"""Typed configuration for every recspark command.

A run is described by one YAML file (``conf/default.yaml`` unless ``--config`` names another) plus
``--set dotted.key=value`` overrides. Both are validated here, by pydantic models that forbid
unknown keys, before any Spark session starts: a typo or a bad value stops the command with a
message that names the key. Jobs pick the values they need out of :class:`Config` and pass plain
values down; no transform receives the whole config. Reading the YAML (the parser, its size
check, ``--set`` overrides, path resolution, error messages) is the job of
:mod:`recspark.core.config_loading`; this module holds the sections and :func:`load_config`, which
validates what that read. ``DEFAULT_CONFIG`` is re-exported from there (tests import it here).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

from pydantic import Field, ValidationError, model_validator

from recspark.core.choices import (
    BASELINE_NAMES,
    BaselineName,
    InputFormat,
    Optimizer,
    ScheduleName,
    TableFormat,
)
from recspark.core.config_loading import CONF_DIR, REPO, format_errors, read_config_data
from recspark.core.config_loading import DEFAULT_CONFIG as DEFAULT_CONFIG  # re-exported

# The sections of what is trained live in config_model; imported here for Config and re-exported.
from recspark.core.config_model import (
    BlendConfig as BlendConfig,
)
from recspark.core.config_model import (
    ListsConfig,
    ModelConfig,
    RankingConfig,
    Section,
)
from recspark.core.config_model import (
    SideInfoConfig as SideInfoConfig,
)
from recspark.core.config_model import (
    TrackingConfig as TrackingConfig,
)
from recspark.core.config_model import (
    carries_lists_head as carries_lists_head,
)
from recspark.core.errors import ConfigError

log = logging.getLogger(__name__)


BenchmarkDataset = Literal["ml100k-u1", "ml100k-ranking", "synthetic"]


_Section = Section


class PathsConfig(_Section):
    root: str = "runs/default"


class SparkConfig(_Section):
    master: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)


class ColumnsConfig(_Section):
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"
    weight: str | None = None


class InputConfig(_Section):
    path: str | None = None
    format: Literal["auto"] | InputFormat = "synthetic"
    columns: ColumnsConfig = Field(default_factory=lambda: ColumnsConfig.model_validate({}))
    validation_path: str | None = None  # split.method: given (optional when test_path is set)
    test_path: str | None = None  # split.method: given: the test split, read by evaluate only
    rating_min: float = 1.0
    rating_max: float = 5.0
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0)
    implicit: bool = False
    # auto: integers when most ids of a text column are (always for MovieLens), else strings.
    id_type: Literal["auto", "integer", "string"] = "auto"
    max_id_length: int = Field(256, gt=0)  # longer raw ids are quarantined
    # CSV/TSV: auto (a first line naming a column or holding no number is a header), true, false.
    header: Literal["auto"] | bool = "auto"

    @model_validator(mode="after")
    def _range_ordered(self) -> InputConfig:
        if self.rating_min >= self.rating_max:
            raise ValueError("rating_min must be below rating_max")
        return self


class SplitConfig(_Section):
    method: Literal["random", "user_stratified", "chronological", "given"] = "random"
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    # The share held out as the test split, which only evaluate and the nightly gate read
    # (0: no test split; evaluate then reports on validation). given: input.test_path instead.
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitConfig:
        if self.method == "given" and self.test_fraction > 0:
            raise ValueError(
                "split.test_fraction applies to the drawn splits: with split.method 'given' set "
                "input.test_path instead"
            )
        if self.validation_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"validation_fraction ({self.validation_fraction}) + test_fraction "
                f"({self.test_fraction}) must stay below 1, to leave rows to train on"
            )
        return self


class PrepareConfig(_Section):
    rows_per_file: int = Field(2_000_000, gt=0)
    row_group_mb: int = Field(8, gt=0)


class TrainConfig(_Section):
    # auto: 8 epochs up to 5.3M train rows, fewer above (recspark.train.loop.auto_epochs); an
    # untrained model is never published, so a number must be at least 1
    epochs: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # auto: the power of two nearest train rows / 128, within [1024, 65536] (recspark.train.loop)
    batch_size: Literal["auto"] | Annotated[int, Field(gt=0)] = "auto"
    lr: float = Field(0.03, gt=0.0)
    weight_decay: float = Field(0.025, ge=0.0)  # L2 penalty on the embedding rows a batch uses
    optimizer_weight_decay: float = Field(0.0, ge=0.0)  # the optimizer's decay (adamw: decoupled)
    optimizer: Optimizer = "sparse_adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    schedule: ScheduleName = "one_cycle"
    restart_epochs: int = Field(1, ge=1)  # cosine: length of the first cycle, in epochs
    restart_mult: int = Field(1, ge=1)  # cosine: each next cycle this many times longer
    patience: int = Field(3, ge=0)
    seed: int = 42
    num_processes: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: tf32 on CUDA, fp32 on the CPU; bf16: mixed precision (recspark.train.precision)
    precision: Literal["auto", "fp32", "tf32", "bf16"] = "auto"
    resume: bool = False
    warm_start: bool = False  # start from the last published model's rows (stable id maps)
    reader_workers: int = Field(1, ge=1)  # >1 reads faster but in no fixed order
    cpu_threads: int | None = Field(None, ge=1)  # torch threads per process; None: torch's choice
    shuffle_buffer: int = Field(100_000, ge=0)
    # How the prepared splits are read (recspark.train.feeding): petastorm's batch reader, or
    # pyarrow alone (where petastorm cannot import: pyarrow >= 15); auto: petastorm if it imports.
    feed: Literal["auto", "petastorm", "arrow"] = "auto"
    # Publish a model that did not beat its own starting point or the global-mean baseline.
    allow_worse: bool = False


class ScoreConfig(_Section):
    # The model to score: None, the one published for run_date; models:/NAME@ALIAS or
    # models:/NAME/VERSION, a version of the MLflow registry (tracking.uri), e.g. its champion.
    model: str | None = Field(None, pattern=r"^models:/[^/@]+(@[\w-]+|/\d+)$")
    top_n: int = Field(10, gt=0)
    exclude_seen: bool = True
    # Users per matmul block; auto: 128 on the CPU (fastest of 64-512 at 20k items), on a GPU as
    # many as a quarter of its free memory holds (recspark.serve.kernel.users_per_block).
    users_per_block: Literal["auto"] | Annotated[int, Field(gt=0)] = "auto"
    partitions: int | None = Field(None, gt=0)  # scoring tasks; None: Spark's default parallelism
    # The model's user table is broadcast to the scoring tasks up to this size (MiB), and joined
    # by user (one shuffle of the users and their rated items) above it or at 0.
    broadcast_users_mb: float = Field(256.0, ge=0)
    # How recommendations/ is written (recspark.serve.tables): parquet folders per run date, or
    # one Delta table (atomic per date on any store; needs Delta's jars).
    table_format: TableFormat = "parquet"
    # Register the table in Spark's catalog under this name (NAME, DB.NAME or CATALOG.DB.NAME).
    table: str | None = Field(None, pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*){0,2}$")
    # Items with fewer training ratings (train split of the model's prepared run) are never
    # recommended, by score, evaluate's lists or recommend: their rows have barely moved from
    # their random start. 0: every item.
    min_item_ratings: int = Field(5, ge=0)


class EvaluateConfig(_Section):
    k: int = Field(10, gt=0)
    relevance_threshold: float = Field(4.0, ge=0.0)
    baselines: list[BaselineName] = Field(
        default_factory=lambda: cast(list[BaselineName], list(BASELINE_NAMES))
    )
    bias_reg: float = Field(10.0, ge=0.0)  # shrinkage of the user+item bias baseline
    bias_iterations: int = Field(3, gt=0)
    als_ranks: list[int] = Field(default_factory=lambda: [10, 20])  # ALS grid, tuned on a
    als_reg_params: list[float] = Field(default_factory=lambda: [0.1, 0.15])  # holdout of train
    als_max_iter: int = Field(10, gt=0)
    als_tune_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    als_seed: int = 42
    als_implicit_rank: int = Field(64, gt=0)  # the als_implicit baseline (not tuned)
    als_implicit_reg_param: float = Field(0.1, gt=0.0)
    als_implicit_alpha: float = Field(5.0, gt=0.0)
    rare_item_ratings: int = Field(5, ge=1)  # a listed item with fewer train ratings is rare


class BenchmarkConfig(_Section):
    """``recspark benchmark``: which data sets and contenders, side by side in one run."""

    datasets: list[BenchmarkDataset] = Field(
        default_factory=lambda: list(get_args(BenchmarkDataset))
    )
    synthetic_sizes: list[int] = Field(default_factory=lambda: [1_000_000, 10_000_000])
    ratings_per_user: int = Field(100, gt=0)  # synthetic shape: users = size / ratings_per_user
    ratings_per_item: int = Field(500, gt=0)  # items = size / ratings_per_item
    movielens_path: str = str(REPO.parent / "shared" / "data" / "ml-100k")
    # data set -> YAML whose model/train sections the `recspark` contender uses there
    model_configs: dict[str, str] = Field(
        default_factory=lambda: {
            "ml100k-u1": str(CONF_DIR / "movielens-100k-dot-bias.yaml"),
            "ml100k-ranking": str(CONF_DIR / "movielens-100k-dot-bias.yaml"),
        }
    )
    contenders: list[str] = Field(
        default_factory=lambda: ["recspark", "als", "most-popular", "biases"]
    )
    # ml100k-ranking (u.data, user_stratified 25%, every validation item relevant) runs these
    ranking_contenders: list[str] = Field(
        default_factory=lambda: [
            "recspark",
            "recspark-ranking",
            "als",
            "als-implicit",
            "most-popular",
            "biases",
            "ease",
        ]
    )
    ranking_config: str = str(CONF_DIR / "movielens-100k-ranking.yaml")  # recspark-ranking's
    # ALS implicitPrefs settings of the benchmark; None: evaluate.als_implicit_*
    als_implicit_rank: int | None = Field(None, gt=0)
    als_implicit_reg_param: float | None = Field(None, gt=0.0)
    als_implicit_alpha: float | None = Field(None, gt=0.0)
    ease_lambda: float = Field(500.0, gt=0.0)  # EASE's L2 penalty (Steck 2019), for ML-100K
    ease_max_items: int = Field(20_000, gt=0)  # EASE is skipped above: its solve is items^2
    reference: str = "als"
    als_rank: int | None = Field(None, gt=0)  # fixed ALS rank/reg above tune_max_ratings
    als_reg_param: float | None = Field(None, gt=0.0)
    tune_max_ratings: int = Field(2_000_000, ge=0)


class RecommendConfig(_Section):
    """``recspark recommend``: one user (existing or folded in), one item's neighbours, or both
    batch extras (the similar-items table, the PCA plot of the item embeddings)."""

    user: str | None = None
    ratings: str | None = None  # a new user's ITEM=RATING pairs, comma-separated (raw item ids)
    similar_to: str | None = None
    top_n: int = Field(10, gt=0)  # list length, and K of the similar-items table
    titles_path: str | None = None  # u.item, movies.dat or movies.csv
    regularization: float | None = Field(None, gt=0.0)  # fold-in ridge; None: train.weight_decay
    # Deprecated: moved to score.min_item_ratings (Config moves a value given here, then clears it).
    min_item_ratings: int | None = Field(None, ge=0)
    similar_table: bool = False  # write top_n similar items of every item (Spark job)
    pca_plot: bool = False  # PCA of the item embeddings: PNG + JSON under exploration/D

    @model_validator(mode="before")
    @classmethod
    def _ids_as_text(cls, data: Any) -> Any:
        # `--set recommend.user=196` arrives as an int and a YAML mapping {1: 5} as a dict.
        if isinstance(data, dict):
            data = dict(data)
            for key in ("user", "similar_to"):
                if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool):
                    data[key] = str(data[key])
            if isinstance(data.get("ratings"), dict):
                data["ratings"] = ",".join(f"{k}={v}" for k, v in data["ratings"].items())
        return data

    @model_validator(mode="after")
    def _one_query(self) -> RecommendConfig:
        given = [key for key in ("user", "ratings", "similar_to") if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set only one of recommend.user, ratings, similar_to (got {given})")
        return self


class SyntheticConfig(_Section):
    users: int = Field(10_000, gt=0)
    items: int = Field(2_000, gt=1)
    ratings: int = Field(500_000, gt=0)
    factors: int = Field(8, gt=0)
    noise: float = Field(0.5, ge=0.0)
    seed: int = 7
    popularity_exponent: float = Field(0.8, ge=0.0)
    activity_sigma: float = Field(1.0, ge=0.0)
    partitions: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _feasible(self) -> SyntheticConfig:
        if self.ratings < self.users:
            raise ValueError("ratings must be at least users: every user rates at least one item")
        if self.ratings > self.users * self.items // 2:
            raise ValueError("ratings must be at most half of users x items")
        return self


class NightlyConfig(_Section):
    """``recspark nightly``: warm start, quality gate, retention and lock of the scheduled run."""

    warm_start: bool = True
    max_rmse_increase: float = Field(0.05, ge=0.0)
    max_rmse: float | None = Field(None, gt=0.0)
    max_ndcg_decrease: float = Field(0.02, ge=0.0)  # ranking models are gated on NDCG@k
    min_ndcg: float | None = Field(None, ge=0.0, le=1.0)
    keep_runs: int = Field(7, ge=1)
    force: bool = False
    lock_stale_hours: float = Field(24.0, gt=0.0)
    # "auto": flock on a local root, a conditional-write lease on s3a://, refused elsewhere;
    # "scheduler": no lock, the scheduler runs one nightly per paths.root (hdfs://, gs://...).
    lock: Literal["auto", "scheduler"] = "auto"


class Config(_Section):
    """The whole run description; every section has defaults so a config may be sparse."""

    @property
    def lists_head(self) -> bool:
        """Whether the trained model carries a ranking head its lists come from."""
        return carries_lists_head(self.model, self.lists)

    paths: PathsConfig = Field(default_factory=lambda: PathsConfig.model_validate({}))
    run_date: dt.date = Field(default_factory=dt.date.today)
    spark: SparkConfig = Field(default_factory=lambda: SparkConfig.model_validate({}))
    input: InputConfig = Field(default_factory=lambda: InputConfig.model_validate({}))
    split: SplitConfig = Field(default_factory=lambda: SplitConfig.model_validate({}))
    prepare: PrepareConfig = Field(default_factory=lambda: PrepareConfig.model_validate({}))
    model: ModelConfig = Field(default_factory=lambda: ModelConfig.model_validate({}))
    ranking: RankingConfig = Field(default_factory=lambda: RankingConfig.model_validate({}))
    lists: ListsConfig = Field(default_factory=lambda: ListsConfig.model_validate({}))
    train: TrainConfig = Field(default_factory=lambda: TrainConfig.model_validate({}))
    score: ScoreConfig = Field(default_factory=lambda: ScoreConfig.model_validate({}))
    evaluate: EvaluateConfig = Field(default_factory=lambda: EvaluateConfig.model_validate({}))
    recommend: RecommendConfig = Field(default_factory=lambda: RecommendConfig.model_validate({}))
    synthetic: SyntheticConfig = Field(default_factory=lambda: SyntheticConfig.model_validate({}))
    benchmark: BenchmarkConfig = Field(default_factory=lambda: BenchmarkConfig.model_validate({}))
    nightly: NightlyConfig = Field(default_factory=lambda: NightlyConfig.model_validate({}))
    tracking: TrackingConfig = Field(default_factory=lambda: TrackingConfig.model_validate({}))

    @model_validator(mode="after")
    def _move_min_item_ratings(self) -> Config:
        # recommend.min_item_ratings was recommend's own; score, evaluate and recommend now share
        # score.min_item_ratings, so that their lists agree. The old key still works.
        old = self.recommend.min_item_ratings
        if old is None:
            return self
        if "min_item_ratings" in self.score.model_fields_set and self.score.min_item_ratings != old:
            raise ConfigError(
                f"invalid config: recommend.min_item_ratings={old} and score.min_item_ratings="
                f"{self.score.min_item_ratings} disagree: recommend.min_item_ratings is "
                "deprecated, set only score.min_item_ratings (it applies to score, evaluate and "
                "recommend)"
            )
        log.warning(
            "recommend.min_item_ratings is deprecated: it moved to score.min_item_ratings, which "
            "applies to score, evaluate and recommend alike; using score.min_item_ratings=%d",
            old,
        )
        self.score.min_item_ratings = old
        self.recommend.min_item_ratings = None
        return self


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate the result.

    Parameters
    ----------
    path
        YAML file; ``conf/default.yaml`` when None. Relative local paths in it (the keys of
        :data:`~recspark.core.config_loading.PATH_KEYS`) are resolved against its folder.
    overrides
        ``dotted.key=value`` strings; values are parsed as YAML scalars or lists. Their relative
        paths stay relative to the working directory.

    Raises
    ------
    ConfigError
        When the file is missing or unreadable, or any key is unknown or any value invalid; the
        message names every offending key.
    """
    data = read_config_data(path, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None
