"""The MovieLens notebook runs top to bottom on a small config, so it never rots."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

from tests.conftest import REPO

NOTEBOOK = REPO / "notebooks" / "recspark_movielens.ipynb"


def test_the_notebook_holds_no_logic_of_its_own():
    """Only recspark calls, display and configuration: no function bodies beyond one helper."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    tree = ast.parse(code)
    functions = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert functions == ["config"]
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert "import recspark" in code
    assert "pyspark" not in code and "torch" not in code


def test_the_notebook_runs_end_to_end(ml100k, tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("RECSPARK_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("RECSPARK_NOTEBOOK_ROOT", str(root))
    monkeypatch.setenv("RECSPARK_ML100K", str(ml100k))
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    # One torch thread in the kernel, as in this process (conftest.py): the notebook's tiny
    # model gains nothing from a second, which only spins while Spark's JVM holds the other core.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # The kernelspec's "python" is replaced by this interpreter (the venv's) by jupyter_client.
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    last = notebook.cells[-1]["outputs"][0]["text"]
    written = ast.literal_eval(last.strip())
    assert Path(written["model"]).is_file() and Path(written["evaluation"]).is_file()
    assert isinstance(written["new_user_top"], str) and written["new_user_top"]
    with Image.open(written["pca_plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 800
    assert (Path(written["similar_items"]) / "_SUCCESS").exists()
    assert str(root) in written["model"]
    # The new user's list never repeats a movie they rated, and has titles.
    new_user = next(c for c in notebook.cells if "ANIMATED = {" in c.get("source", ""))
    table = new_user["outputs"][-1]["data"]["text/plain"]
    for title in ("Toy Story (1995)", "Aladdin (1992)", "Lion King, The (1994)"):
        assert title not in table
    assert "(19" in table
