"""Exceptions whose message is meant for the person running the job.

A :class:`RecsparkError` says what went wrong and what to do about it; the command runner prints it
as the ``error`` of the JSON summary line without a stack trace. Anything else is a bug and is
reported with its traceback on stderr.

Each failure has its exit status (:func:`exit_status`): 2 for a bad config or command line, 3 for
a result a gate refused to publish (:class:`RejectedError`), 1 for anything else. A scheduler
retries 1 (a crash, a held lock, a flaky store) and not 3: the same run on the same data is
rejected again.
"""

#: The exit status of a command that failed for any reason but the two below.
EXIT_FAILED = 1
#: The exit status of a bad config or command line: nothing ran.
EXIT_BAD_CONFIG = 2
#: The exit status of a run whose result a gate refused to publish: retrying repeats the verdict.
EXIT_REJECTED = 3


class RecsparkError(Exception):
    """A failure the user can act on: bad input, missing upstream output, a failed gate."""


class ConfigError(RecsparkError):
    """The config file or a ``--set`` override is invalid; raised before Spark starts."""


class BadInputError(RecsparkError):
    """The input table is unusable (wrong columns, too many bad rows, empty split)."""


class MissingInputError(RecsparkError):
    """An upstream stage's output is absent: run that stage first."""


class RejectedError(RecsparkError):
    """The run worked but a gate judged its result not fit to publish; nothing was published."""


class QualityGateError(RejectedError):
    """A nightly candidate model is worse than the last published one: nothing was published."""


class LockHeldError(RecsparkError):
    """Another nightly run holds the lock on this ``paths.root``: wait for it, or check it died."""


class TrainingRejectedError(RejectedError):
    """A training run that did not learn (no better than where it started, or than predicting the
    mean rating): its model was not published, and the date's previous model stays."""


class UnwritableOutputError(RecsparkError):
    """``paths.root`` cannot be written (a read-only mount, no permission): set it to a folder
    that can be."""


def exit_status(error: BaseException) -> int:
    """The exit status of a command that failed with ``error``.

    Parameters
    ----------
    error
        What the command raised.

    Returns
    -------
    int
        :data:`EXIT_BAD_CONFIG` for a :class:`ConfigError`, :data:`EXIT_REJECTED` for a
        :class:`RejectedError`, :data:`EXIT_FAILED` for anything else (a bug included).
    """
    if isinstance(error, ConfigError):
        return EXIT_BAD_CONFIG
    if isinstance(error, RejectedError):
        return EXIT_REJECTED
    return EXIT_FAILED
