"""The config sections of what is trained: ``model.*`` (with ``model.side_info`` and
``model.blend``), ``ranking.*`` and ``lists.*``, and :class:`Section`, the base every section of
:class:`recspark.core.config.Config` shares (unknown keys refused, assignments validated).

Split from :mod:`recspark.core.config`, which imports these into :class:`~recspark.core.config.
Config` and re-exports them, so ``from recspark.core.config import ModelConfig`` keeps working.
:class:`TrackingConfig` (``tracking.*``, MLflow) lives here too, beside the sections it records.
The shape keys of ``model.*`` take their defaults from :class:`~recspark.core.model_shape.
ModelShape`, written once there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recspark.core.choices import Confidence, ModelKind, RankingLoss, SideInfoFormat
from recspark.core.model_shape import DEFAULT_SHAPE, ModelShape


class Section(BaseModel):
    """A config section: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SideInfoConfig(Section):
    """``model.side_info``: user and item features read from a MovieLens folder."""

    format: SideInfoFormat = "movielens-100k"
    path: str  # the folder holding u.user/u.item (100K) or users.dat/movies.dat (1M)
    users: bool = True  # age band, gender, occupation
    items: bool = True  # genres


class BlendConfig(Section):
    """``model.blend``: a second model fitted after the main one, with settings of its own, whose
    scores are averaged into the main model's.

    ``kind: autorec`` (a rating model's partner): an I-AutoRec (:mod:`recspark.model.autorec`);
    the published model predicts ``(1 - weight) * main + weight * autorec`` and its lists still
    come from the main model (its ranking head, with ``lists.source: head``). The autoencoder reads
    the train ratings into the trainer's memory (12 bytes a rating) and trains in that one process.

    ``kind: ease`` (a ranking model's partner): EASE (:mod:`recspark.model.ease`), fitted in closed
    form on the train positives; the lists rank by ``(1 - weight) * main + weight * ease`` on raw
    scores. Its tables are dense (users x items and items x items): catalogues up to 20,000 items.
    """

    kind: Literal["autorec", "ease"] = "autorec"
    # The partner's share: 0.3 for autorec, 2/3 for ease (its scores, about 0-1, are far smaller
    # than a softmax model's logits: on ML-100K this adds twice EASE's score to the model's).
    weight: float | None = Field(None, gt=0.0, lt=1.0)
    hidden: int = Field(500, gt=0)  # autorec: width of its item codes
    epochs: int = Field(20, gt=0)  # autorec
    batch_size: int = Field(1024, gt=0)  # autorec
    lr: float = Field(0.001, gt=0.0)  # autorec
    # autorec: L2 on the encoder and decoder matrices, per epoch beside the summed squared errors
    # (the paper's lambda / 2).
    weight_decay: float = Field(50.0, ge=0.0)
    patience: int = Field(3, ge=0)  # autorec
    regularization: float = Field(500.0, gt=0.0)  # ease: its lambda (as benchmark.ease_lambda)

    @property
    def share(self) -> float:
        """``weight``, or the kind's default when unset."""
        if self.weight is not None:
            return self.weight
        return 0.3 if self.kind == "autorec" else 2.0 / 3.0


class ModelConfig(Section):
    """``model.*``: the kind, its objective and its shape. The shape keys are the YAML face of
    :class:`~recspark.core.model_shape.ModelShape` and take its defaults (written once there; the
    trainer turns them into a :class:`~recspark.model.spec.ModelSpec`), and are checked by it."""

    kind: ModelKind = "dot_bias"
    objective: Literal["rating", "ranking"] = "rating"
    factors: int = Field(DEFAULT_SHAPE.factors, gt=0)
    user_factors: int | None = Field(DEFAULT_SHAPE.user_factors, gt=0)
    item_factors: int | None = Field(DEFAULT_SHAPE.item_factors, gt=0)
    # None: the prepared ratings' range (the trainer's choice, not the spec's default).
    y_range: tuple[float, float] | None = None
    hidden: list[int] = Field(default_factory=lambda: list(DEFAULT_SHAPE.hidden))
    # A trained mlp's dropout after each hidden layer; the bare spec's default is none.
    dropouts: list[float] = Field(default_factory=lambda: [0.2])
    embedding_dropout: float = Field(DEFAULT_SHAPE.embedding_dropout, ge=0.0, lt=1.0)
    # Multiplier of train.weight_decay for bias rows.
    bias_penalty: float = Field(DEFAULT_SHAPE.bias_penalty, ge=0.0)
    side_info: SideInfoConfig | None = None  # side features added to the embedding tables
    # >1: mean of that many dot/dot_bias models
    ensemble: int = Field(DEFAULT_SHAPE.members, ge=1, le=16)
    blend: BlendConfig | None = None  # a second model averaged into the main one's scores

    def shape(self) -> ModelShape:
        """The configured shape (features and ranking head are the trainer's to add)."""
        return ModelShape(
            factors=self.factors,
            y_range=self.y_range,
            hidden=tuple(self.hidden),
            dropouts=tuple(self.dropouts),
            embedding_dropout=self.embedding_dropout,
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            bias_penalty=self.bias_penalty,
            members=self.ensemble,
        )

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        problem = self.shape().shape_problem()
        if problem is not None:
            raise ValueError(problem)
        if self.ensemble > 1 and (self.kind == "mlp" or self.objective == "ranking"):
            raise ValueError(
                "model.ensemble averages rating-trained dot or dot_bias models: set "
                "model.ensemble=1 for an mlp or a ranking model"
            )
        if self.blend is not None and self.blend.kind == "autorec" and self.objective == "ranking":
            raise ValueError(
                "model.blend.kind=autorec averages rating predictions; a ranking model predicts "
                "none: set model.blend.kind=ease (or model.objective=rating)"
            )
        if self.blend is not None and self.blend.kind == "ease" and self.objective != "ranking":
            raise ValueError(
                "model.blend.kind=ease adds EASE's scores to a ranking model's; a rating model "
                "takes model.blend.kind=autorec (or set model.objective=ranking)"
            )
        if self.y_range is not None and self.objective == "ranking":
            raise ValueError(
                "y_range squashes rating predictions; a ranking model scores without one: remove"
                " model.y_range or set model.objective=rating"
            )
        return self


class RankingConfig(Section):
    """``model.objective: ranking``: which rows are positives, the loss, negative sampling."""

    loss: RankingLoss = "softmax"
    # Per positive (bpr) or per batch, shared by its rows (softmax); >= items: whole catalogue.
    negatives: int = Field(100, gt=0)
    sampling_alpha: float = Field(0.0, ge=0.0)  # negatives drawn as (count + 1)^alpha; 0: uniform
    positive_threshold: float = Field(0.0, ge=0.0)  # rating at or above it is a positive
    confidence: Confidence = "none"  # per-row weight 1 + alpha * value
    confidence_alpha: float = Field(1.0, ge=0.0)
    validation_items: int = Field(1000, gt=0)  # items each validation positive is ranked against


class ListsConfig(Section):
    """What the published top-N lists rank by (``score``, ``evaluate``, ``recommend``, ``nightly``).

    ``head`` (default): a rating model (``model.objective: rating``) trains a ranking head beside
    its rating head on the same batches (:mod:`recspark.train.objectives.joint`): own user rows,
    the model's item rows, a per-item bias, a softmax over the catalogue (``ranking.loss``,
    ``ranking.negatives``, ``ranking.sampling_alpha``, ``ranking.validation_items``) with every
    train row a positive. The lists rank by the head's score plus ``rating_weight`` times the
    rating head's logit. ``ratings``: rank by predicted rating (rating models before this
    existed). A ranking model (``model.objective: ranking``) ranks by its own scores either way.
    """

    source: Literal["head", "ratings"] = "head"
    head_weight: float = Field(0.3, gt=0.0)  # the head's loss beside the rating MSE
    head_lr_scale: float = Field(0.2, gt=0.0)  # the head's rows learn at train.lr times this
    # The head trains on the first this many rows of each (shuffled) batch: its step costs about
    # as much again as the rating head's, so large batches (65,536 from 8M rows) share it out.
    head_rows: int = Field(16384, gt=0)
    # List score = head score + rating_weight x (p_u . q_i + b_i); 0: the head alone. Not for mlp.
    rating_weight: float = Field(0.5, ge=0.0)


def carries_lists_head(model: ModelConfig, lists: ListsConfig) -> bool:
    """Whether the model ``model.*`` and ``lists.*`` describe carries a ranking head its lists
    come from: a rating model whose lists come from a head (``lists.source: head``)."""
    return model.objective == "rating" and lists.source == "head"


class TrackingConfig(Section):
    """``tracking.*``: MLflow run records and the registered model (:mod:`recspark.ops.tracking`).

    Off unless ``uri`` is set or the ``MLFLOW_TRACKING_URI`` environment variable is: the default
    pipeline never imports mlflow. With a URI, ``train``, ``evaluate`` and ``nightly`` each log
    one run to ``experiment``, ``train`` registers its model as a new version of ``model_name``
    and ``nightly`` points the alias ``champion`` at the version it publishes. An ``http(s)``
    server that does not answer stops the command before Spark starts (``required``), or, with
    ``required: false``, is warned about and nothing is logged.
    """

    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else tracking is off
    required: bool = True
    experiment: str = Field("recspark", min_length=1)
    model_name: str = Field("recspark", min_length=1)
    register_model: bool = True  # train registers its model as a new version of model_name
    timeout_seconds: float = Field(5.0, gt=0.0)  # the reachability check before Spark starts
