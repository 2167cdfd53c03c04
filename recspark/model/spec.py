"""The one typed description of a model: :class:`ModelSpec`, one dataclass per kind, defaults once.

A spec says what :func:`recspark.model.registry.build_model` builds: the kind, the table sizes
(from the id maps) and the kind's shape. The embedding kinds' shape is
:class:`~recspark.core.model_shape.ModelShape`, whose defaults the config's ``model.*`` section
(its YAML face) reads too (``core`` may not import this room); the trainer writes one
(:func:`recspark.train.spec.model_spec`), the published model reads one back, and the registry
builds from one. ``model.pt`` stores a spec as
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

from recspark.core.model_shape import DEFAULT_Y_RANGE, ModelShape

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
            if (
                name in ("n_users", "n_items")
                or name in self.given
                or value != _default(spec_field)
            ):
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
class FactorSpec(ModelShape, ModelSpec):
    """The embedding kinds (``dot``, ``dot_bias``, ``mlp``): table sizes and a
    :class:`~recspark.core.model_shape.ModelShape`, whose fields and defaults ``model.*`` shares.

    The kinds share their arguments, as ``model.*`` gives every one whatever the kind: a kind
    reads the ones it uses (``dot`` no ``y_range``, only ``mlp`` the layers).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = self.shape_problem()
        if problem is not None:
            raise ValueError(problem)
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


def make_spec(kind: str, n_users: int, n_items: int, **options: Any) -> ModelSpec:
    """The spec of a ``kind`` model with these table sizes and ``options`` (the names ``model.pt``
    stores: ``factors``, ``y_range``, ``hidden``, ...), checked as a stored spec is."""
    return ModelSpec.from_stored({"kind": kind, "n_users": n_users, "n_items": n_items, **options})


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
