"""The one typed description of a model: :class:`ModelSpec`, one dataclass per kind, defaults once.

A spec says what :func:`recspark.model.registry.build_model` builds: the kind, the table sizes
(from the id maps) and the kind's shape. The config's ``model.*`` section (its YAML face) takes
its defaults from here, the trainer writes one (:func:`recspark.train.spec.model_spec`), the
published model reads one back, and the registry builds from one. ``model.pt`` stores a spec as
the plain dict of the arguments that were given (:meth:`ModelSpec.as_dict`), as older versions
did, so a model saved before these types existed loads (:meth:`ModelSpec.from_stored`) and what
is saved now loads in older code. The cases are plain dataclasses, not pydantic models: the
scoring kernel and the training loop load models on machines with torch and nothing else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

#: The output range of the sigmoid-scaled kinds when none is given (fastai's for 1-5 ratings).
DEFAULT_Y_RANGE: tuple[float, float] = (1.0, 5.5)
#: Kinds an ensemble (``members > 1``) may average: their scores are one matrix product each.
ENSEMBLE_KINDS: tuple[str, ...] = ("dot", "dot_bias")
#: Fields whose stored form is a list (``model.pt`` and ``metrics.json`` hold lists, not tuples).
_SEQUENCES = ("y_range", "hidden", "dropouts", "weights")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What every kind has: table sizes (rows of the user and item tables, from the id maps).

    Parameters
    ----------
    n_users, n_items
        Rows of the user and item tables; the registry refuses empty ones.
    sparse
        Tables with sparse gradients (for the sparse optimizers); a scoring payload's cut model
        sets it False for every kind, so every kind takes it.
    given
        The argument names the spec was made from (:meth:`from_stored`): :meth:`as_dict` gives
        them back, so what is saved is what the trainer chose.
    """

    kind: ClassVar[str]
    n_users: int
    n_items: int
    sparse: bool = False
    given: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_users < 0 or self.n_items < 0:
            raise ValueError(f"table sizes cannot be negative: {self.n_users}, {self.n_items}")

    @property
    def carries_lists_head(self) -> bool:
        """Whether the model carries a ranking head its published lists come from."""
        return False

    def as_dict(self) -> dict[str, Any]:
        """The plain dict ``model.pt`` holds: the kind, the table sizes, every argument that was
        given and every one that differs from its default (sequences as lists)."""
        stored: dict[str, Any] = {"kind": self.kind}
        for spec_field in dataclasses.fields(self):
            name = spec_field.name
            if name == "given":
                continue
            value = getattr(self, name)
            if name in ("n_users", "n_items") or name in self.given or value != _default(spec_field):
                stored[name] = _stored_value(value)
        return stored

    def replace(self, **changes: Any) -> ModelSpec:
        """This spec with ``changes``, which count as given."""
        return dataclasses.replace(self, given=self.given | set(changes), **changes)

    @staticmethod
    def from_stored(stored: Mapping[str, Any]) -> ModelSpec:
        """The spec a plain dict describes (``model.pt``'s ``spec``, ``build_model``'s keyword
        arguments); the keys it holds are remembered as given.

        Raises
        ------
        ValueError
            For an unknown kind, or an argument its kind does not take.
        """
        arguments = dict(stored)
        kind = arguments.pop("kind", None)
        cases = spec_classes()
        if kind not in cases:
            raise ValueError(f"unknown model kind {kind!r}; choose one of {tuple(cases)}")
        case = cases[kind]
        names = {f.name for f in dataclasses.fields(case)} - {"given"}
        unknown = sorted(set(arguments) - names)
        if unknown:
            raise ValueError(f"a {kind!r} model takes no {', '.join(unknown)}")
        given = frozenset(arguments)
        for name in ("hidden", "parts", "weights"):  # None meant the default to older code
            if name in arguments and arguments[name] is None:
                del arguments[name]
        for name in _SEQUENCES:
            if arguments.get(name) is not None:
                arguments[name] = tuple(arguments[name])
        if arguments.get("parts") is not None:
            arguments["parts"] = tuple(ModelSpec.from_stored(part) for part in arguments["parts"])
        return case(given=given, **arguments)


@dataclass(frozen=True, kw_only=True)
class FactorSpec(ModelSpec):
    """The embedding kinds (``dot``, ``dot_bias``, ``mlp``): what ``model.*`` configures.

    They share their arguments, as ``model.*`` gives every one whatever the kind: a kind reads
    the ones it uses (``dot`` no ``y_range``, only ``mlp`` the layers).

    Parameters
    ----------
    factors
        Embedding width of the dot kinds.
    y_range
        ``(low, high)`` of the sigmoid-scaled output (``dot_bias``, ``mlp``); None: raw scores.
    hidden, dropouts, embedding_dropout
        The ``mlp``'s layers, the dropout after each (None: none), and dropout on the
        concatenated embeddings.
    user_factors, item_factors
        The ``mlp``'s embedding widths; None: fastai's rule of thumb (``embedding_size``).
    user_features, item_features
        Side features per user / item (0: none).
    bias_penalty
        Multiplier of ``train.weight_decay`` for bias rows.
    members
        Above 1: an ensemble of that many models (``dot`` and ``dot_bias`` only).
    lists_head
        Give the model (every member) a ranking head, which its published lists come from.
    """

    factors: int = 32
    y_range: tuple[float, float] | None = DEFAULT_Y_RANGE
    hidden: tuple[int, ...] = (64,)
    dropouts: tuple[float, ...] | None = None
    embedding_dropout: float = 0.0
    user_factors: int | None = None
    item_factors: int | None = None
    user_features: int = 0
    item_features: int = 0
    bias_penalty: float = 1.0
    members: int = 1
    lists_head: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.user_features < 0 or self.item_features < 0:
            raise ValueError(
                "user_features and item_features count features: they cannot be negative"
            )
        if self.members > 1 and self.kind not in ENSEMBLE_KINDS:
            raise ValueError(f"an ensemble averages {ENSEMBLE_KINDS} models, not {self.kind!r}")

    @property
    def carries_lists_head(self) -> bool:
        return self.lists_head

    @property
    def layer_dropouts(self) -> tuple[float, ...]:
        """The dropout after each hidden layer: ``dropouts``, or none after any."""
        return self.dropouts if self.dropouts is not None else (0.0,) * len(self.hidden)


@dataclass(frozen=True, kw_only=True)
class DotSpec(FactorSpec):
    """``dot``: ``p_u . q_i``."""

    kind: ClassVar[Literal["dot"]] = "dot"


@dataclass(frozen=True, kw_only=True)
class DotBiasSpec(FactorSpec):
    """``dot_bias``: ``sigmoid(p_u . q_i + b_u + b_i)`` scaled into ``y_range``."""

    kind: ClassVar[Literal["dot_bias"]] = "dot_bias"


@dataclass(frozen=True, kw_only=True)
class MlpSpec(FactorSpec):
    """``mlp``: fastai's EmbeddingNet over concatenated user and item embeddings."""

    kind: ClassVar[Literal["mlp"]] = "mlp"


@dataclass(frozen=True, kw_only=True)
class AutoRecSpec(ModelSpec):
    """``autorec`` (a blend's partner): the code width ``factors``, where the user biases start
    (``rating_mean``) and the range predictions are clamped to outside training."""

    kind: ClassVar[Literal["autorec"]] = "autorec"
    factors: int = 32
    rating_mean: float = 0.0
    y_range: tuple[float, float] | None = DEFAULT_Y_RANGE


@dataclass(frozen=True, kw_only=True)
class EaseSpec(ModelSpec):
    """``ease`` (a blend's partner): fitted in closed form, nothing to choose but the sizes."""

    kind: ClassVar[Literal["ease"]] = "ease"


@dataclass(frozen=True, kw_only=True)
class BlendSpec(ModelSpec):
    """``blend``: the weighted mean of ``parts`` (the main model first); ``factors`` is the
    main model's width, for reports (each part builds its own)."""

    kind: ClassVar[Literal["blend"]] = "blend"
    factors: int = 32
    parts: tuple[ModelSpec, ...] = ()
    weights: tuple[float, ...] = ()
    lists_head: bool = False

    @property
    def carries_lists_head(self) -> bool:
        return self.lists_head


#: Every case, for exhaustive matching.
AnyModelSpec = DotSpec | DotBiasSpec | MlpSpec | AutoRecSpec | EaseSpec | BlendSpec


def spec_classes() -> dict[str, type[ModelSpec]]:
    """Kind -> its spec class: every subclass of :class:`ModelSpec` that names a kind."""
    found: dict[str, type[ModelSpec]] = {}
    pending = list(ModelSpec.__subclasses__())
    while pending:
        case = pending.pop(0)
        pending += case.__subclasses__()
        if "kind" in vars(case):
            found[case.kind] = case
    return found


def spec_from_dict(stored: Mapping[str, Any] | ModelSpec) -> ModelSpec:
    """``stored`` as a :class:`ModelSpec` (a spec itself is returned as it is)."""
    return stored if isinstance(stored, ModelSpec) else ModelSpec.from_stored(stored)


def _default(spec_field: dataclasses.Field[Any]) -> Any:
    if spec_field.default is not dataclasses.MISSING:
        return spec_field.default
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return dataclasses.MISSING


def _stored_value(value: Any) -> Any:
    if isinstance(value, ModelSpec):
        return value.as_dict()
    if isinstance(value, tuple):
        return [_stored_value(item) for item in value]
    return value
