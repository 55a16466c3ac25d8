"""Execute the tutorial notebooks with their fast setting (``pytest -m tutorial``).

Each notebook runs in a temporary copy (the committed notebook and its stored outputs are never
rewritten) with ``MANIFEX_TUTORIAL_FAST=1`` and the shared benchmark data from
``$MANIFEX_DATA_DIR``, else ``../shared/data`` next to the repository. Without that directory the
tests are skipped, as is the scVI tutorial without scvi-tools.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

#: notebook -> (timeout in seconds for any one cell, extra module it needs)
NOTEBOOKS = {
    "01_pbmc3k_dlme.ipynb": (600, None),
    "02_paul15_trajectory.ipynb": (600, None),
    "03_images_tsimcne.ipynb": (900, None),
    "04_n2d_vs_leiden.ipynb": (600, "igraph"),
    "05_query_oneshot.ipynb": (600, None),
    "06_kang_batches_scvi.ipynb": (900, "scvi"),
}


def _data_dir() -> Path | None:
    env = os.environ.get("MANIFEX_DATA_DIR")
    d = Path(env) if env else ROOT.parent / "shared" / "data"
    return d if d.is_dir() else None


@pytest.mark.tutorial
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_runs(name, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    timeout, needs = NOTEBOOKS[name]
    if needs is not None and importlib.util.find_spec(needs) is None:
        pytest.skip(f"{name} needs {needs}")
    data = _data_dir()
    if data is None:
        pytest.skip("shared benchmark data not found (set MANIFEX_DATA_DIR)")

    src = TUTORIALS / name
    committed = src.read_bytes()
    work = tmp_path / name
    shutil.copyfile(src, work)
    nb = nbformat.read(work, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None

    env = {
        **os.environ,
        "MANIFEX_TUTORIAL_FAST": "1",
        "MANIFEX_DATA_DIR": str(data),
        # small networks gain nothing from threads, and on a busy machine spinning threads slow
        # them down many times; numba would otherwise raise torch's thread count on first use
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "1"),
    }
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,  # per cell
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    assert src.read_bytes() == committed  # the committed notebook and its outputs are untouched
