"""Build the zip of the ``recspark`` package that ``spark-submit --py-files`` ships to executors.

Executors import ``recspark`` inside pandas UDFs and ``mapInPandas`` functions, so on a cluster
whose nodes do not have it installed the package must travel with the job::

    .venv/bin/python -m recspark.packaging dist/recspark.zip
    spark-submit --master spark://HOST:7077 --py-files dist/recspark.zip jobs/nightly.py ...

Only the package's Python sources go in (no ``__pycache__``), in sorted order with fixed
timestamps, so the same sources always give the same bytes. The zip is written beside its
destination and renamed into place, so a scheduler never ships a half-written one. Third-party
dependencies (pyarrow, torch, petastorm, ...) are not bundled: executors need them in the Python
that ``spark.pyspark.python`` names (a shared venv, a conda pack, or the container image).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def package_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """The ``.py`` files of the package, sorted, without caches."""
    return sorted(
        path
        for path in package_dir.rglob("*.py")
        if "__pycache__" not in path.parts and not path.name.startswith(".")
    )


def build_zip(destination: str | os.PathLike, package_dir: Path = PACKAGE_DIR) -> Path:
    """Write ``recspark/**.py`` into the zip ``destination`` and return its absolute path.

    Parameters
    ----------
    destination
        The zip file to write; its folder is created. An existing file is replaced whole.
    package_dir
        The package to pack (this installed ``recspark`` by default).
    """
    target = Path(destination).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    files = package_files(package_dir)
    if not any(path.name == "__init__.py" and path.parent == package_dir for path in files):
        raise FileNotFoundError(f"{package_dir} is not a Python package (no __init__.py)")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                name = Path(package_dir.name) / path.relative_to(package_dir)
                info = zipfile.ZipInfo(name.as_posix(), date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, path.read_bytes())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recspark.packaging",
        description="Zip the recspark package for spark-submit --py-files; prints the zip's path.",
    )
    parser.add_argument(
        "destination", nargs="?", default="dist/recspark.zip", help="default: dist/recspark.zip"
    )
    args = parser.parse_args(argv)
    print(build_zip(args.destination))
    return 0


if __name__ == "__main__":
    sys.exit(main())
