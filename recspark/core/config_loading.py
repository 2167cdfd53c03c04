"""Reading a config file: the YAML parser (no implicit timestamps, a size limit against alias
bombs), ``--set`` overrides, resolution of relative and ``~`` paths, and the error message that
names every bad key. :mod:`recspark.core.config` validates what :func:`read_config_data` reads
(its :func:`~recspark.core.config.load_config`); this module knows nothing of the sections.
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from recspark.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
DEFAULT_CONFIG = CONF_DIR / "default.yaml"

#: Keys that hold a path. In a config file a relative local path is resolved against the file's
#: folder, so a config means the same from any working directory; ``--set`` values are resolved
#: against the working directory, as a shell user expects; a leading ``~`` is expanded in both.
#: URIs (``s3a://``, ``hdfs://``, ``file://``...) are left as they are. ``*`` stands for every key
#: of a mapping.
PATH_KEYS = (
    ("paths", "root"),
    ("input", "path"),
    ("input", "validation_path"),
    ("input", "test_path"),
    ("model", "side_info", "path"),
    ("recommend", "titles_path"),
    ("benchmark", "movielens_path"),
    ("benchmark", "ranking_config"),
    ("benchmark", "model_configs", "*"),
)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def default_config_path() -> Path:
    """``conf/default.yaml`` of the source tree, else of the working directory.

    The second covers an installed package or a ``--py-files`` zip, where the package no longer
    sits next to ``conf/``: run from the repository, or pass ``--config``.
    """
    for candidate in (DEFAULT_CONFIG, Path.cwd() / "conf" / "default.yaml"):
        if candidate.is_file():
            return candidate
    return DEFAULT_CONFIG


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``2026-02-30`` stays text for the config to judge.

    PyYAML would build a ``date`` itself and raise a bare ``ValueError`` on an impossible one;
    as text, pydantic parses it and the error names the key (``run_date``).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


#: The most YAML nodes a config (or one ``--set`` value) may expand to, its aliases (``*name``)
#: counted at every place they are used. The shipped configs have a few hundred nodes; a
#: hand-written one with long lists (``benchmark`` grids, ``spark.conf``) stays in the low
#: thousands. 100,000 leaves a wide margin above any real config and still refuses an alias bomb
#: ("billion laughs": nine nested lists of nine aliases expand to 10^9 nodes, gigabytes once
#: built or printed) before anything expands it; counting the node graph costs a few
#: milliseconds however far it would expand.
MAX_YAML_NODES = 100_000


def _parse_yaml(text: str, source: str) -> Any:
    """One YAML document through :class:`_Loader`: ``yaml.safe_load`` minus timestamps.

    The document is composed into its node graph first and refused, with a :class:`ConfigError`
    naming ``source`` (``config file X``, ``--set KEY``), when it expands to more than
    :data:`MAX_YAML_NODES` nodes; only then are Python values built from it.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(
            f"{source} nests YAML lists or mappings too deeply to read: a recspark config is a "
            "few levels deep"
        ) from None
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse ``root`` when, with its aliases expanded, it holds more than MAX_YAML_NODES nodes.

    Counts each distinct node once (memoized), so the cost is the size of the written text, not
    of the expansion; an alias that refers to a node holding it (``&a [*a]``) is refused too.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(
                f"{source} holds a YAML alias that refers to itself (&name ... *name inside it): "
                "write the value out without the alias"
            )
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source} expands to more than {MAX_YAML_NODES:,} YAML values once its "
                    "aliases (*name) are expanded; a recspark config holds a few hundred: write "
                    "the values out instead of nesting aliases"
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects dotted.key=value, got {_shown(item)}")
    try:
        value = _parse_yaml(raw, f"--set {key.strip()}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def resolve_local(path: str, base: Path) -> str:
    """``path`` made absolute against ``base`` when it is a relative local path; else as given.

    A leading ``~`` or ``~user`` is expanded first (:func:`expand_home`).
    """
    if not isinstance(path, str) or not path or _URI.match(path):
        return path
    expanded = expand_home(path)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(base, expanded))


def expand_home(path: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` replaced by that home folder; else as given.

    Only the first component: ``runs/~tmp`` keeps its ``~``. URIs are left as they are.
    """
    if not isinstance(path, str) or not path.startswith("~") or _URI.match(path):
        return path
    return os.path.expanduser(path)


def _resolve_paths(node: Any, keys: tuple[str, ...], fix: Callable[[str], str]) -> None:
    """Replace the path at ``keys`` inside the nested mapping ``node`` by ``fix(path)``."""
    if not isinstance(node, dict) or not keys:
        return
    head, rest = keys[0], keys[1:]
    names = list(node) if head == "*" else [head]
    for name in names:
        if name not in node:
            continue
        if rest:
            _resolve_paths(node[name], rest, fix)
        elif isinstance(node[name], str):
            node[name] = fix(node[name])


def _override_paths(key_path: list[str], value: Any) -> Any:
    """``value`` of ``--set KEY=value`` with a leading ``~`` of its paths expanded.

    ``value`` may be a path key's own value or a section holding some (``--set 'paths={root:
    ~/x}'``): it is checked at its place in the config, as a config file's values are.
    """
    # {k1: {k2: ... {kn: value}}}, so that PATH_KEYS match as they do in a whole config.
    nested = value
    for part in reversed(key_path):
        nested = {part: nested}
    for keys in PATH_KEYS:
        _resolve_paths(nested, keys, expand_home)
    for part in key_path:
        nested = nested[part]
    return nested


def _apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {'.'.join(path)}: {'.'.join(path[: depth + 1])} is not a section"
            )
        node = child
    node[path[-1]] = value


#: How much of a bad value a message shows: enough to recognise it, never the whole of a long
#: list or text (a message is one JSON line, read by people and schedulers alike).
_SHOWN = reprlib.Repr()  # its keyword arguments are Python 3.12's; 3.11 sets the attributes
_SHOWN.maxlevel, _SHOWN.maxstring = 2, 80
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 5
_SHOWN_CHARS = 120
_SHOWN_ERRORS = 10  # errors named in one message


def _shown(value: Any) -> str:
    """A short repr of ``value`` for a message: nested, long or repeated parts elided."""
    text = _SHOWN.repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])[:_SHOWN_CHARS] or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (check its spelling against docs/INTERFACE.md)")
        else:
            lines.append(f"{key}: {item['msg']} (got {_shown(item.get('input'))})")
    if len(lines) > _SHOWN_ERRORS:
        more = len(lines) - _SHOWN_ERRORS
        lines = [*lines[:_SHOWN_ERRORS], f"and {more} more (fix these and run again to see them)"]
    return "invalid config: " + "; ".join(lines)


def read_config_data(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """The mapping a YAML config holds, its relative paths resolved and ``--set`` overrides
    applied, ready to validate (:func:`recspark.core.config.load_config`).

    Raises
    ------
    ConfigError
        When the file is missing, unreadable, not YAML, not a mapping, or too large once its
        aliases expand; when an override is malformed.
    """
    config_path = Path(path) if path is not None else default_config_path()
    if not config_path.is_file():
        raise ConfigError(
            f"config file {config_path} not found: pass an existing YAML file to --config"
        )
    try:
        data = _parse_yaml(config_path.read_text(), f"config file {config_path}") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {config_path} must hold a mapping of sections")
    base = config_path.resolve().parent
    for keys in PATH_KEYS:
        _resolve_paths(data, keys, lambda text: resolve_local(text, base))
    for item in overrides or []:
        key_path, value = _parse_override(item)
        _apply_override(data, key_path, _override_paths(key_path, value))
    return data
