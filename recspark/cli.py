"""The ``recspark`` command and the shared entry point of every ``jobs/*.py`` script.

``recspark COMMAND [--config FILE] [--set dotted.key=value ...]`` and
``spark-submit jobs/COMMAND.py [--config FILE] [--set ...]`` both land in :func:`main`, so the two
behave the same by construction. The config is validated before Spark starts; the command's own
work is timed; the last line on stdout is always one JSON object (see ``docs/INTERFACE.md``), with
``"status": "error"`` and a non-zero exit status when the command fails.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from recspark.commands.stage import Stage
from recspark.core.config import Config, load_config
from recspark.core.errors import EXIT_BAD_CONFIG, ConfigError, RecsparkError, exit_status

if TYPE_CHECKING:
    pass


#: Every command, in the order ``recspark --help`` lists them; ``recspark.commands.NAME.STAGE``
#: says what each does and runs it.
COMMAND_NAMES = (
    "generate",
    "prepare",
    "train",
    "score",
    "evaluate",
    "nightly",
    "recommend",
    "benchmark",
)


def stage(name: str) -> Stage:
    """The stage of command ``name``: ``recspark.commands.NAME.STAGE``."""
    module = importlib.import_module(f"recspark.commands.{name}")
    found = getattr(module, "STAGE", None)
    if not isinstance(found, Stage):
        raise TypeError(f"recspark.commands.{name} defines no STAGE")
    return found


@functools.cache
def stages() -> dict[str, Stage]:
    """Every command's stage by name, in :data:`COMMAND_NAMES` order."""
    return {name: stage(name) for name in COMMAND_NAMES}


log = logging.getLogger("recspark")


class UsageError(ConfigError):
    """The command line itself is wrong (unknown command or option)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad command line still ends in a JSON line."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(f"{self.prog}: {message} (`recspark --help` lists the commands)")


def command_list() -> str:
    return "commands:\n" + "\n".join(
        f"  {name:<10} {command.purpose}" for name, command in stages().items()
    )


def build_parser() -> argparse.ArgumentParser:
    """``recspark COMMAND [--config FILE] [--set KEY=VALUE ...]``, with help per command."""
    parser = _Parser(
        prog="recspark",
        description="Distributed batch recommender on Apache Spark. Every command prints one "
        "JSON summary line last on stdout; logs go to stderr. `recspark COMMAND --help` says "
        "what one command does and which config sections it reads.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=command_list()
        + "\n\nexample: recspark train --set train.epochs=5 --set model.kind=mlp",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, text in stages().items():
        sub = commands.add_parser(
            name,
            help=text.purpose,
            description=f"{text.purpose}\n\nconfig sections read: {', '.join(text.sections)} "
            "(docs/INTERFACE.md lists every key).\nIt prints one JSON summary line last on "
            "stdout; the exit status is 0 on success, 2 for a bad config, 3 when a gate rejected "
            "the result (nothing published; do not retry), 1 otherwise.",
            epilog=f"example:\n  {text.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_config_arguments(sub)
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


def summary_line(command: str | None, config: Config | None, **fields: Any) -> str:
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


def writes_root(command: str, config: Config) -> bool:
    """Whether ``command`` writes under ``paths.root``: every command but ``recommend``, which
    writes only its optional similar-items table and PCA plot."""
    if command == "recommend":
        return bool(config.recommend.similar_table or config.recommend.pca_plot)
    return True


def run_command(
    command: str, config: Config, clock: dict[str, float] | None = None
) -> dict[str, Any]:
    """Run one command's stage in this process and return its summary fields (no printing).

    Every stage is wrapped the same way here, once: its ``precheck(config)``, when it has one,
    runs first, so the cheap checks of its input fail in a second rather than after the JVM's
    start; a command that writes checks that ``paths.root`` can be written; then Spark starts
    and ``clock["started"]`` is set, so ``seconds`` counts the command's own work and not the JVM
    start; the stage's :class:`~recspark.commands.stage.StageResult` becomes the summary fields.
    """
    from recspark.core import location, spark_errors
    from recspark.core.output_root import check_writable

    chosen = stage(command)
    # Storage settings (S3 endpoint, keys) are Spark's Hadoop ones: the config's before Spark
    # starts, then the session's (spark-submit --conf, core-site.xml), the config's winning.
    location.configure(config.spark.conf)
    if chosen.precheck is not None:
        chosen.precheck(config)
    if writes_root(command, config):
        check_writable(config.paths.root)
    from recspark.core.spark import get_spark

    # Failures a person can fix (a stale .crc, a spark.conf value Spark refuses) come out of the
    # JVM as stack traces: say what they mean instead.
    with spark_errors.translated(config.spark.conf):
        spark = get_spark(f"recspark-{command}", master=config.spark.master, conf=config.spark.conf)
        location.configure_from_spark(spark)
        location.configure(config.spark.conf)
        if clock is not None:
            clock["started"] = time.perf_counter()
        summary = chosen.run(config, spark).summary()
    # Outputs on the driver's disk are shown as plain paths (what pandas, IPython and a shell
    # take); those on a cluster's storage keep their URI.
    summary["outputs"] = location.shown(summary["outputs"])
    return summary


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
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.setLevel(logging.INFO)
    args_list = list(sys.argv[1:] if argv is None else argv)
    if command is not None:
        args_list = [command, *args_list]
    if not args_list:
        # Bare `recspark`: what there is to run, and a clean exit (nothing was asked).
        print(f"usage: recspark COMMAND [--config FILE] [--set KEY=VALUE ...]\n\n{command_list()}")
        print("\n`recspark COMMAND --help` for one command; docs/INTERFACE.md for every key.")
        return 0
    try:
        args = build_parser().parse_args(args_list)
    except UsageError as exc:
        known = args_list[0] if args_list[0] in COMMAND_NAMES else None
        print(summary_line(known, None, status="error", error=str(exc), seconds=0.0), flush=True)
        return EXIT_BAD_CONFIG
    config = None
    clock = {"started": time.perf_counter()}
    try:
        config = load_config(args.config, args.overrides)
        fields = run_command(args.command, config, clock)
        status = 0
    except RecsparkError as exc:  # a config error (2), a gate's rejection (3), or another (1)
        fields, status = {"status": "error", "error": str(exc)}, exit_status(exc)
    except Exception as exc:  # a bug or an environment failure: keep the trace for the log
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
        fields = {
            "status": "error",
            "error": f"unexpected failure ({message}); the stack trace is on stderr",
        }
        status = exit_status(exc)
    fields["seconds"] = round(time.perf_counter() - clock["started"], 3)
    if stop_session:
        stop_spark()
    print(summary_line(args.command, config, **fields), flush=True)
    return status


def entry_point() -> None:
    sys.exit(main(stop_session=True))


if __name__ == "__main__":
    entry_point()
