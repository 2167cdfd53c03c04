"""Exceptions whose message is meant for the person running the job.

A :class:`RecsparkError` says what went wrong and what to do about it; the command runner prints it
as the ``error`` of the JSON summary line without a stack trace. Anything else is a bug and is
reported with its traceback on stderr.
"""


class RecsparkError(Exception):
    """A failure the user can act on: bad input, missing upstream output, a failed gate."""


class ConfigError(RecsparkError):
    """The config file or a ``--set`` override is invalid; raised before Spark starts."""


class BadInputError(RecsparkError):
    """The input table is unusable (wrong columns, too many bad rows, empty split)."""


class MissingInputError(RecsparkError):
    """An upstream stage's output is absent: run that stage first."""


class QualityGateError(RecsparkError):
    """A nightly candidate model is worse than the last published one: nothing was published."""


class LockHeldError(RecsparkError):
    """Another nightly run holds the lock on this ``paths.root``: wait for it, or check it died."""


class TrainingRejectedError(RecsparkError):
    """A training run that did not learn (no better than where it started, or than predicting the
    mean rating): its model was not published, and the date's previous model stays."""


class UnwritableOutputError(RecsparkError):
    """``paths.root`` cannot be written (a read-only mount, no permission): set it to a folder
    that can be."""
