"""Every colab/*.ipynb executes top to bottom in its smoke setting and writes the plots it declares.

Conventions each notebook follows (see colab/README.md): it reads LPO_JAX_SMOKE=1 (tiny setting) and
LPO_JAX_NOTEBOOK_OUT (where its PNGs go), and lists the PNG paths it must produce (relative to that directory) in
its metadata under ``metadata["lpo_jax"]["outputs"]``; a notebook without that list must produce at least one PNG
there. The kernel is a subprocess that inherits this process's environment, so it
gets tests/conftest.py's XLA_FLAGS (8 fake CPU devices), JAX_PLATFORMS=cpu, the shared persistent compilation
cache and the offline Hugging Face settings.
"""
import glob
import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

COLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "colab")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLAB, "*.ipynb")))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CELL_TIMEOUT_S = 600


def test_notebooks_exist():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert {"01_quickstart.ipynb", "02_selection.ipynb"} <= set(names), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_setting(path, tmp_path, monkeypatch):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    declared = nb.metadata.get("lpo_jax", {}).get("outputs") or []
    assert all(name.endswith(".png") for name in declared), declared
    out_dir = tmp_path / "outputs"
    monkeypatch.setenv("LPO_JAX_SMOKE", "1")
    monkeypatch.setenv("LPO_JAX_NOTEBOOK_OUT", str(out_dir))
    for key in ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_COMPILATION_CACHE_DIR"):  # set by tests/conftest.py
        assert os.environ.get(key), f"{key} should be set for the kernel by tests/conftest.py"
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": COLAB}})
    start = time.time()
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    wall = time.time() - start
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, errors
    assert all(cell.get("execution_count") for cell in nb.cells
               if cell.cell_type == "code" and cell.source.strip()), "a code cell did not run"
    produced = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*.png"))
    assert produced, f"{os.path.basename(path)} wrote no PNG into LPO_JAX_NOTEBOOK_OUT"
    for name in declared or produced:
        png = out_dir / name
        assert png.is_file(), f"{os.path.basename(path)} did not write {name} into LPO_JAX_NOTEBOOK_OUT"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, f"{name} is not a non-trivial PNG"
    print(f"{os.path.basename(path)}: {wall:.0f}s")
