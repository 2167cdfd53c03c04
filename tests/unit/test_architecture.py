"""The shape of the package: imports run one way, files and functions stay small, one model
factory, no test hooks, and the scoring kernel needs no Spark.

The rooms of ``recspark/`` are ordered upstream to downstream. A module may import from its own
room and from rooms upstream of it, never downstream, and no room but ``commands`` (and the CLI
above it) imports a command. These tests read every module's imports with ``ast``, so a backwards
import fails here before it becomes an import cycle or a stage that cannot be tested alone. They
also read its size: no file over :data:`MAX_FILE_LINES` lines, no function over
:data:`MAX_FUNCTION_LINES` unless its docstring says why after ``long:``; one ``def build_model``
(the registry's); and no environment variable that pauses or injects a fault (tests monkeypatch
instead). Each check is run once on a small made-up package too, to show that it can fail.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "recspark"

#: Upstream first. ``cli`` and ``packaging`` sit at the top, beside ``commands``.
ROOMS = ("core", "data", "model", "train", "serve", "evaluate", "ops", "commands", "cli")
TOP_LEVEL = {"cli": "cli", "packaging": "commands", "__init__": "core"}


def room_of(module: str) -> str | None:
    """The room of a dotted ``recspark`` module name (None for the package itself)."""
    parts = module.split(".")
    if parts[0] != "recspark" or len(parts) < 2:
        return None
    return TOP_LEVEL.get(parts[1], parts[1])


def module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every ``recspark`` import in a file, at any depth (lazy ones too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "recspark":
                found += [(node.lineno, f"recspark.{alias.name}") for alias in node.names]
            elif node.module.startswith("recspark."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("recspark.")]
    return found


def backward_imports(package: Path = PACKAGE) -> list[str]:
    """Every import in ``package`` that reaches a room downstream of the importing module's."""
    problems = []
    for path in sorted(package.rglob("*.py")):
        source_room = room_of(module_name(path, package))
        for line, target in imported_modules(path):
            target_room = room_of(target)
            if source_room is None or target_room is None or target_room == source_room:
                continue
            if target_room not in ROOMS:
                problems.append(f"{path.name}:{line} imports {target}: not a room of {ROOMS}")
            elif ROOMS.index(target_room) > ROOMS.index(source_room):
                problems.append(
                    f"{path.relative_to(package.parent)}:{line} ({source_room}) imports {target} "
                    f"({target_room}, downstream)"
                )
    return problems


def test_every_module_lives_in_a_room():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.stem not in TOP_LEVEL]
    assert loose == [], f"modules outside the rooms: {loose}"
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(ROOMS) - {"cli"}


def test_imports_run_upstream_only():
    assert backward_imports() == []


def test_a_backward_import_is_caught(tmp_path):
    """The check itself can fail: a data module importing the scoring glue is reported."""
    fake = tmp_path / "recspark"
    for room in ("data", "serve"):
        (fake / room).mkdir(parents=True)
        (fake / room / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "serve" / "scoring.py").write_text("from recspark.data.sources import read\n")
    (fake / "data" / "sources.py").write_text(
        "def read():\n    from recspark.serve.scoring import recommend_all\n"
    )
    problems = backward_imports(fake)
    assert len(problems) == 1
    assert (
        "data/sources.py:2 (data) imports recspark.serve.scoring (serve, downstream)"
        in (problems[0])
    )


def test_no_room_imports_a_command():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path in PACKAGE.rglob("*.py")
        if room_of(module_name(path)) not in ("commands", "cli")
        for line, target in imported_modules(path)
        if room_of(target) in ("commands", "cli")
    ]
    assert offenders == []


def _import_targets(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    """The package modules one ``import`` statement names, relative imports resolved.

    ``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``; a module that is
    not in ``modules`` (a third-party one, a name that does not exist) is left out.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    named = (f"{base}.{alias.name}" for alias in node.names)
    return [target for target in (n if n in modules else base for n in named) if target in modules]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` and the package modules it imports, at any depth: lazy imports
    and ``if TYPE_CHECKING:`` ones count, as a circle through them is still a circle."""
    paths = {module_name(path, package): path for path in sorted(package.rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[module] = {
            target
            for node in ast.walk(tree)
            for target in _import_targets(node, module, is_package, set(paths))
        } - {module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """One ``a -> b -> a`` line for each circle of imports a depth-first walk finds."""
    cycles: dict[frozenset[str], str] = {}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                circle = [*path[path.index(target) :], target]
                cycles.setdefault(frozenset(circle), " -> ".join(circle))
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return list(cycles.values())


def test_no_import_circle():
    """No module reaches itself through imports, lazy and type-checking ones included: a circle
    means a module and the one it builds on each need the other (a factory in a base module)."""
    cycles = import_cycles(import_graph())
    assert cycles == [], "import circles:\n" + "\n".join(cycles)


def test_an_import_circle_is_caught(tmp_path):
    """The check itself can fail: a circle through a lazy, a type-checking and a relative import."""
    fake = tmp_path / "recspark"
    (fake / "model").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "model" / "__init__.py").write_text("")
    (fake / "model" / "base.py").write_text("def build():\n    from recspark.model import kinds\n")
    (fake / "model" / "kinds.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .helpers import Helper\n"
    )
    (fake / "model" / "helpers.py").write_text("from recspark.model.base import build\n")
    assert import_cycles(import_graph(fake)) == [
        "recspark.model.base -> recspark.model.kinds -> recspark.model.helpers -> "
        "recspark.model.base"
    ]
    (fake / "model" / "helpers.py").write_text("import recspark.model\n")
    assert import_cycles(import_graph(fake)) == []


BLOCK_SPARK = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoSpark(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("pyspark", "petastorm", "py4j", "pydantic"):
                raise ImportError(f"{name} is blocked: this module must not need it")
            return None

    sys.meta_path.insert(0, NoSpark())
    """
)


@pytest.mark.parametrize(
    "module",
    [
        "recspark.serve.kernel",
        "recspark.train.loop",
        "recspark.train.prefetch",
        "recspark.train.precision",
        "recspark.core.torch_utils",
    ],
)
def test_kernel_and_loop_import_without_spark(module):
    """A GPU machine with torch but no Java, pyspark or pydantic runs the kernel and the loop."""
    code = BLOCK_SPARK + textwrap.dedent(
        f"""
        import {module}
        loaded = sorted(
            m for m in sys.modules if m.split(".")[0] in ("pyspark", "petastorm", "pydantic")
        )
        assert not loaded, loaded
        print("imported")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_the_block_really_blocks_spark():
    """The guard above is not vacuous: importing the Spark glue under it fails."""
    code = BLOCK_SPARK + "import recspark.serve.scoring\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "pyspark" in result.stderr and "blocked" in result.stderr


def test_the_kernel_ranks_without_spark():
    """The kernel's top-N, run where pyspark cannot be imported, matches a brute-force ranking."""
    code = BLOCK_SPARK + textwrap.dedent(
        """
        import numpy as np, torch
        from recspark.serve.kernel import top_k
        scores = torch.tensor([[0.1, 0.9, 0.5, 0.9], [3.0, 1.0, 2.0, 0.0]])
        index, value, valid = top_k(scores, 3)
        print(index.tolist(), valid.tolist())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # Ties go to the lower item index: items 1 and 3 both score 0.9.
    assert (
        result.stdout.strip() == "[[1, 3, 2], [0, 2, 1]] [[True, True, True], [True, True, True]]"
    )


#: The most lines a file in ``recspark/`` may have: more, and it holds more than one job.
MAX_FILE_LINES = 500
#: The most lines a function may span (``def`` to its last line) without a reason.
MAX_FUNCTION_LINES = 100
#: What a function's docstring says to be allowed more: ``long: <why it is one piece>``.
LONG_REASON = re.compile(r"\blong:", re.IGNORECASE)
#: An environment variable named for a test hook: a word of it starts with PAUSE or FAULT.
HOOK_NAME = re.compile(r"(?:^|_)(?:PAUSE|FAULT)")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def oversized_files(package: Path = PACKAGE, limit: int = MAX_FILE_LINES) -> list[str]:
    """``path: N lines`` for each file of ``package`` longer than ``limit`` lines, longest first."""
    sizes = [
        (len(path.read_text(encoding="utf-8").splitlines()), path)
        for path in sorted(package.rglob("*.py"))
    ]
    return [
        f"{path.relative_to(package.parent)}: {lines} lines"
        for lines, path in sorted(sizes, key=lambda size: -size[0])
        if lines > limit
    ]


def long_functions(package: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for each function or method of ``package`` over ``limit``
    lines whose docstring gives no ``long:`` reason; nested functions are counted on their own."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit and not LONG_REASON.search(ast.get_docstring(node) or ""):
                found.append(
                    f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({lines} lines)"
                )
    return found


def definitions_of(name: str, package: Path = PACKAGE) -> list[str]:
    """``path:line`` of every function called ``name`` in ``package``, at any depth."""
    return [
        f"{path.relative_to(package.parent)}:{node.lineno}"
        for path in sorted(package.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name
    ]


def _is_environment_read(node: ast.Call) -> bool:
    """``os.environ.get(...)``, ``os.getenv(...)`` or ``environ.get(...)``."""
    function = node.func
    if not isinstance(function, ast.Attribute):
        return isinstance(function, ast.Name) and function.id == "getenv"
    owner = function.value
    if function.attr == "getenv":
        return True
    return function.attr in ("get", "pop", "setdefault") and (
        (isinstance(owner, ast.Attribute) and owner.attr == "environ")
        or (isinstance(owner, ast.Name) and owner.id == "environ")
    )


def pause_and_fault_hooks(package: Path = PACKAGE) -> list[str]:
    """``path:line NAME`` for each pause or fault-injection hook in ``package``: a string that
    names such an environment variable, or a read of the environment through a name that does
    (``os.environ.get(PAUSE_ENV)``, ``os.environ[FAULT]``)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package.parent)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if ENV_NAME.match(node.value) and HOOK_NAME.search(node.value):
                    found.append(f"{where}:{node.lineno} {node.value}")
                continue
            if isinstance(node, ast.Call) and _is_environment_read(node):
                keys = node.args[:1]
            elif isinstance(node, ast.Subscript) and (
                isinstance(node.value, ast.Attribute) and node.value.attr == "environ"
            ):
                keys = [node.slice]
            else:
                continue
            found += [
                f"{where}:{node.lineno} {key.id}"
                for key in keys
                if isinstance(key, ast.Name) and HOOK_NAME.search(key.id)
            ]
    return found


def test_no_file_is_over_the_size_limit():
    """A file over :data:`MAX_FILE_LINES` lines does several jobs: split it by job."""
    offenders = oversized_files()
    assert offenders == [], f"files over {MAX_FILE_LINES} lines:\n" + "\n".join(offenders)


def test_no_function_is_over_the_length_limit_without_a_reason():
    """A function over :data:`MAX_FUNCTION_LINES` lines is split, or says ``long: <why>``."""
    offenders = long_functions()
    assert offenders == [], (
        f"functions over {MAX_FUNCTION_LINES} lines with no 'long:' reason in their docstring:\n"
        + "\n".join(offenders)
    )


def test_one_model_factory():
    """Models are built in one place, the registry: ``grep "def build_model"`` finds one."""
    factories = definitions_of("build_model")
    assert len(factories) == 1, f"def build_model is not defined exactly once: {factories}"


def test_no_pause_or_fault_hook_in_the_package():
    """Tests pause or break a stage by monkeypatching it, not through an environment variable
    that production code reads."""
    offenders = pause_and_fault_hooks()
    assert offenders == [], "environment hooks in recspark/:\n" + "\n".join(offenders)


def test_the_size_checks_catch_a_long_file_and_a_long_function(tmp_path):
    """The checks themselves can fail: a long file and long functions; not one with a reason."""
    fake = tmp_path / "recspark"
    (fake / "model").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    body = "".join(f"    x{i} = {i}\n" for i in range(100))  # a function of 101 lines
    (fake / "model" / "big.py").write_text(
        f"def big():\n{body}\n\n"
        f'def reasoned():\n    """One piece.\n\n    Long: a table of cases.\n    """\n{body}\n\n'
        "class Kind:\n    def method(self):\n" + body.replace("    ", "        ")
    )
    # At the limit, not over it: the ``def`` line and 99 more.
    (fake / "model" / "small.py").write_text("def small():\n" + body.split("\n", 1)[1])
    assert long_functions(fake) == [
        "recspark/model/big.py:1 big (101 lines)",
        "recspark/model/big.py:212 method (101 lines)",
    ]
    assert oversized_files(fake, limit=300) == ["recspark/model/big.py: 312 lines"]
    assert oversized_files(fake) == []


def test_the_factory_and_hook_checks_catch_a_second_factory_and_a_pause(tmp_path):
    """The checks themselves can fail: two factories, a pause read three ways."""
    fake = tmp_path / "recspark"
    for room in ("model", "serve"):
        (fake / room).mkdir(parents=True)
        (fake / room / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "model" / "registry.py").write_text("def build_model(spec):\n    return spec\n")
    (fake / "model" / "embedding.py").write_text(
        "class Net:\n    def build_model(self):\n        return self\n"
    )
    assert definitions_of("build_model", fake) == [
        "recspark/model/embedding.py:2",
        "recspark/model/registry.py:1",
    ]
    (fake / "serve" / "scoring.py").write_text(
        "import os\n"
        "from os import environ, getenv\n"
        "DEFAULTS = 'SPARK_DEFAULT_CONF'\n"
        "PAUSE_ENV = 'RECSPARK_SCORE_PAUSE_SECONDS'\n"
        "seconds = os.environ.get(PAUSE_ENV)\n"
        "broken = os.environ[INJECT_FAULT]\n"
        "also = getenv(FAULT_AT) or environ.get(PAUSE_MARKER)\n"
        "fine = os.environ.get(HOME_ENV)\n"
    )
    assert pause_and_fault_hooks(fake) == [
        "recspark/serve/scoring.py:4 RECSPARK_SCORE_PAUSE_SECONDS",
        "recspark/serve/scoring.py:5 PAUSE_ENV",
        "recspark/serve/scoring.py:6 INJECT_FAULT",
        "recspark/serve/scoring.py:7 FAULT_AT",
        "recspark/serve/scoring.py:7 PAUSE_MARKER",
    ]
