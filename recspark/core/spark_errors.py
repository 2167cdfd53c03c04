"""Known Spark and JVM failures, told as :class:`RecsparkError` messages that say what to do.

A failure inside Spark reaches Python as py4j's ``Py4JJavaError`` or one of pyspark's captured
exceptions, whose text is a JVM stack trace; the command runner would report it as an unexpected
failure. The few that a person can fix themselves are recognised here by the class and message of
a throwable in the JVM's chain of causes, read through py4j rather than from the printed trace,
and turned into one-line errors (:func:`translate`, :func:`translated`). Anything else is left as
it is, trace and all.

Known so far:

* Hadoop's ``ChecksumException``: the local filesystem keeps a ``.NAME.crc`` beside each file
  Spark writes and checks it on every read, so a part file edited after Spark wrote it cannot be
  read until its stale ``.crc`` is deleted.
* A ``spark.conf`` value that Spark's own config checks refuse (``spark.sql.shuffle.partitions:
  "0"``). Spark checks SQL settings when it builds the session's state, other settings when it
  first reads them, so this may surface at the session's start or in the first job.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from recspark.core.errors import BadInputError, ConfigError, RecsparkError
from recspark.core.location import Location

_CHECKSUM = "org.apache.hadoop.fs.ChecksumException"
# Hadoop's ChecksumFileSystem: "Checksum error: <file> at <position>", then " exp: <crc> got:
# <crc>" when it read the file from its start.
_CHECKSUM_FILE = re.compile(r"Checksum error: (?P<file>.+?) at -?\d+(?: exp: |\s*$)", re.MULTILINE)
# The wording of Spark's config checks, around the key they refuse: ConfigBuilder.checkValue
# ("'0' in KEY is invalid. ..."), its type conversions ("KEY should be boolean, but was x"; "The
# value of KEY should be one of ..."), SparkConf's getters ("Illegal value for config key KEY:
# ...").
_REFUSED = (
    r"' in {key} is invalid\b",
    r"(?<![\w.-]){key} should be \w+, but was ",
    r"The value of {key} should be ",
    r"Illegal value for config key {key}:",
)
_DEPTH = 32  # causes followed at most


def java_chain(error: BaseException) -> list[tuple[str, str]]:
    """``(class name, message)`` of each JVM throwable behind ``error``, outermost first.

    Follows Python's ``__cause__`` too, so a JVM failure re-raised by recspark is still found.
    Empty when ``error`` did not come from the JVM (or the JVM is gone).
    """
    chain: list[tuple[str, str]] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # Py4JJavaError keeps the throwable in java_exception, pyspark's captured ones in _origin.
        throwable = getattr(current, "java_exception", None) or getattr(current, "_origin", None)
        while throwable is not None and len(chain) < _DEPTH:
            try:
                chain.append(
                    (str(throwable.getClass().getName()), str(throwable.getMessage() or ""))
                )
                throwable = throwable.getCause()
            except Exception:  # the JVM is gone: what was read is all there is
                break
        current = current.__cause__
    return chain


def _first_line(text: str) -> str:
    return (text.strip() or "no detail").splitlines()[0]


def _shown(where: Location) -> str:
    return str(where.local) if where.is_local else where.uri


def _checksum_error(message: str) -> RecsparkError:
    match = _CHECKSUM_FILE.search(message)
    if match is None:
        return BadInputError(
            f"a file failed its checksum ({_first_line(message)}): it changed after it was "
            "written; if the change was deliberate, delete the .NAME.crc file beside it"
        )
    name = match.group("file")
    if not name.startswith("file:"):
        # Only the local filesystem keeps .crc files; elsewhere the stored bytes are damaged.
        return BadInputError(f"{name} failed its checksum: the stored file is damaged; restore it")
    data = Location(name)
    crc = data.parent / f".{data.name}.crc"
    return BadInputError(
        f"{_shown(data)} does not match its checksum file {_shown(crc)}: the file was changed "
        f"after Spark wrote it. If the change was deliberate, delete {_shown(crc)} (Spark then "
        "reads the file unchecked); otherwise restore the file"
    )


def _refused_setting(message: str, spark_conf: Mapping[str, Any]) -> ConfigError | None:
    for key, value in spark_conf.items():
        if any(re.search(p.format(key=re.escape(key)), message) for p in _REFUSED):
            return ConfigError(
                f"spark.conf {key}: Spark refuses the value {str(value)!r} "
                f"({_first_line(message)}): set a valid value for {key} in spark.conf, or remove it"
            )
    return None


def translate(error: BaseException, spark_conf: Mapping[str, Any]) -> RecsparkError | None:
    """The :class:`RecsparkError` a known JVM failure means, or None for any other error.

    Parameters
    ----------
    error
        What a Spark call raised.
    spark_conf
        ``spark.conf`` of the config: a refused value is blamed on one of these keys only.
    """
    if isinstance(error, RecsparkError):
        return None
    chain = java_chain(error)
    for name, message in chain:
        if name == _CHECKSUM:
            return _checksum_error(message)
    # Innermost first: an outer "Job aborted" message repeats its cause's, stack trace and all.
    for _, message in reversed(chain):
        refused = _refused_setting(message, spark_conf)
        if refused is not None:
            return refused
    return None


@contextlib.contextmanager
def translated(spark_conf: Mapping[str, Any]) -> Iterator[None]:
    """Raise :func:`translate`'s error instead of a known JVM failure raised in the block."""
    try:
        yield
    except Exception as error:
        known = translate(error, spark_conf)
        if known is None:
            raise
        raise known from error
