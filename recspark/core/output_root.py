"""Whether ``paths.root`` can be written, checked before a command starts Spark.

A root that cannot be written (a read-only mount, a folder without write permission) would
otherwise fail deep inside the first write, in pyarrow or in a Spark task, with an error that
names neither the root nor ``paths.root``. The check writes and removes one empty file, as the
command would, because permission bits do not tell: root ignores them, while a read-only mount or
an immutable folder refuses root too. Folders it creates to get there are removed again, so a
command that then fails for another reason (``train`` before ``prepare``) leaves no empty root.

Local roots only: a cluster's storage reports a refused write with its own error, and a probe
there would cost requests on every command.
"""

from __future__ import annotations

import os
import uuid

from recspark.core.errors import UnwritableOutputError
from recspark.core.location import Location


def _nearest_existing(target: Location) -> Location:
    while not target.exists() and target.parent != target:
        target = target.parent
    return target


def _remove_created(folder: Location, existing: Location) -> None:
    """Remove ``folder`` and its parents up to ``existing``, each only while empty."""
    while folder != existing and folder.parent != folder:
        try:
            os.rmdir(folder.local)  # refuses a folder that is not empty
        except OSError:
            return
        folder = folder.parent


def check_writable(root: str) -> None:
    """Fail unless a file can be created in the local folder ``root`` (created if missing).

    Raises
    ------
    UnwritableOutputError
        Naming ``paths.root``, why it cannot be written, and the folder that refuses.
    """
    target = Location(root)
    if not target.is_local:
        return
    existing = _nearest_existing(target)
    if existing == target and not target.is_dir():
        raise UnwritableOutputError(
            f"paths.root {target.local} is a file, not a folder: set paths.root to a folder"
        )
    probe = target / f"_write_check-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise UnwritableOutputError(
            f"paths.root {target.local} cannot be written ({reason}): set paths.root to a folder "
            f"this user can write to, or make {existing.local} writable"
        ) from None
    finally:
        _remove_created(target, existing)
