"""``examples/quickstart.ipynb`` runs top to bottom in a fresh kernel, so it cannot rot.

The kernel is this interpreter's (``python3`` resolves to ``sys.executable``) and imports this
checkout's memgen (PYTHONPATH); its working directory is a temporary one, one torch thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def outputs(cell) -> list[dict]:
    return cell.get("outputs", [])


@pytest.mark.slow
def test_the_quickstart_notebook_trains_analyses_plots_and_steers(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not outputs(c) for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs"
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    scratch = tmp_path / "tmp"  # the notebook's tempfile.mkdtemp lands here: pytest cleans it
    scratch.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(scratch),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # a cell that raises fails here, naming the cell

    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
    code = [c for c in nb.cells if c.cell_type == "code"]
    images = [c for c in code if any("image/png" in o.get("data", {}) for o in outputs(c))]
    assert len(images) >= 3, "the training curves, the neurons and steering are plotted inline"
    text = "\n".join(o.get("text", "") for c in code for o in outputs(c))
    assert "MEM/GEN pairs: " in text and "MEM/GEN pairs: 0" not in text
    assert "steered " in text and " neurons at alpha " in text
    # the hand-steered table: a DataFrame with the library's labels
    last_table = [o for c in code for o in outputs(c) if "text/html" in o.get("data", {})][-1]
    assert "steered label" in last_table["data"]["text/html"]
    assert [p.name for p in tmp_path.iterdir()] == ["tmp"], \
        "the notebook writes only to its own temporary folder"
