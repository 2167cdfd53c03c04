"""The shape of an embedding model (``dot``, ``dot_bias``, ``mlp``) and its defaults, written once.

Two rooms read it: the config's ``model.*`` section (:class:`recspark.core.config.ModelConfig`,
its YAML face) takes its defaults from :data:`DEFAULT_SHAPE`, and the model spec
(:class:`recspark.model.spec.FactorSpec`) is a :class:`ModelShape` with table sizes. It sits in
``core`` because the config may not import the ``model`` room (imports run one way). Plain
dataclasses, no pydantic: the scoring kernel loads models where only torch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The output range of the sigmoid-scaled kinds when none is given (fastai's, for 1-5 ratings).
DEFAULT_Y_RANGE: tuple[float, float] = (1.0, 5.5)


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """What a model of an embedding kind looks like, apart from its table sizes.

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

    def shape_problem(self) -> str | None:
        """What makes this shape impossible (a message saying what to do), or None."""
        if self.dropouts is not None and len(self.dropouts) != len(self.hidden):
            return (
                f"dropouts has {len(self.dropouts)} entries but hidden has {len(self.hidden)}:"
                " give one dropout per hidden layer"
            )
        if self.dropouts is not None and any(not 0.0 <= p < 1.0 for p in self.dropouts):
            return "every dropout must be in [0, 1)"
        if self.y_range is not None and self.y_range[0] >= self.y_range[1]:
            return "y_range must be [low, high] with low < high"
        if self.user_features < 0 or self.item_features < 0:
            return "user_features and item_features count features: they cannot be negative"
        return None


#: The defaults of every shape field, for the config to read.
DEFAULT_SHAPE = ModelShape()
