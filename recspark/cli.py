"""The ``recspark`` command and the shared entry point of every ``jobs/*.py`` script.

``recspark COMMAND [--config FILE] [--set dotted.key=value ...]`` and
``spark-submit jobs/COMMAND.py [--config FILE] [--set ...]`` both land in :func:`main`, so the two
behave the same by construction. The config is validated before Spark starts; the command's own
work is timed; the last line on stdout is always one JSON object (see ``INTERFACE.md``), with
``"status": "error"`` and a non-zero exit status when the command fails.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from typing import Any

from recspark.core.config import Config, load_config
from recspark.core.errors import ConfigError, RecsparkError

COMMANDS = {
    "generate": "Write the embedded synthetic ratings data set and its planted factors.",
    "prepare": "Check, index and split a ratings table into Parquet for training.",
    "train": "Train an embedding model on the prepared tables (Petastorm + PyTorch).",
    "score": "Write the top-N recommendations of every user, partitioned by run date.",
    "evaluate": "Rating and ranking metrics of the trained model on the validation split.",
    "nightly": "prepare, train, score and evaluate one run date as one unit, gated and locked.",
    "recommend": "Top-N for one existing or new user, or the items most similar to one item.",
    "benchmark": "recspark and Spark ALS on the same data in one run, side by side.",
}

log = logging.getLogger("recspark")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recspark",
        description="Distributed batch recommender on Apache Spark. Every command prints one "
        "JSON summary line last on stdout; logs go to stderr.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
        + "\n\nexample: recspark train --set train.epochs=5 --set model.kind=mlp",
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    add_config_arguments(parser)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: conf/default.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set train.lr=0.01 (repeatable)",
    )


def summary_line(command: str, config: Config | None, **fields: Any) -> str:
    summary: dict[str, Any] = {
        "command": command,
        "status": "ok",
        "run_date": str(config.run_date) if config is not None else None,
        "outputs": {},
        "counts": {},
        "metrics": {},
    }
    summary.update(fields)
    return json.dumps(summary, default=str, sort_keys=False)


def run_command(command: str, config: Config, clock: dict[str, float] | None = None) -> dict[str, Any]:
    """Run one command in this process and return its summary fields (no printing).

    ``clock["started"]`` is set once Spark is up, so ``seconds`` counts the command's own work and
    not the JVM start.
    """
    module = importlib.import_module(f"recspark.commands.{command}")
    from recspark.core.spark import get_spark

    spark = get_spark(f"recspark-{command}", master=config.spark.master, conf=config.spark.conf)
    if clock is not None:
        clock["started"] = time.perf_counter()
    return module.run(config, spark)


def stop_spark() -> None:
    """Stop the session before the summary is printed, so that no shutdown log follows it."""
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def main(
    argv: list[str] | None = None, command: str | None = None, stop_session: bool = False
) -> int:
    """Parse arguments, run the command, print the summary line; return the exit status.

    Parameters
    ----------
    argv
        Arguments after the program name (``sys.argv[1:]`` when None).
    command
        Fixed command for a ``jobs/COMMAND.py`` script; then ``argv`` holds only options.
    stop_session
        Stop Spark before printing the summary (entry points do; tests sharing a session do not).
    """
    # spark-submit merges the Python process's stderr into its stdout, so library chatter at
    # INFO (py4j logs on shutdown) would land after the summary line: only recspark logs INFO.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.INFO)
    args_list = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        args_list = [command, *args_list]
    args = build_parser().parse_args(args_list)
    config = None
    clock = {"started": time.perf_counter()}
    try:
        config = load_config(args.config, args.overrides)
        fields = run_command(args.command, config, clock)
        status = 0
    except ConfigError as exc:
        fields, status = {"status": "error", "error": str(exc)}, 2
    except RecsparkError as exc:
        fields, status = {"status": "error", "error": str(exc)}, 1
    except Exception as exc:  # a bug or an environment failure: keep the trace for the log
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        fields = {
            "status": "error",
            "error": f"unexpected failure ({message}); the stack trace is on stderr",
        }
        status = 1
    fields["seconds"] = round(time.perf_counter() - clock["started"], 3)
    if stop_session:
        stop_spark()
    print(summary_line(args.command, config, **fields), flush=True)
    return status


def entry_point() -> None:
    sys.exit(main(stop_session=True))


if __name__ == "__main__":
    entry_point()
