"""Settings for the docstring examples of ``src/manifex``, which pytest runs as doctests.

Each example runs in its own temporary working directory (files it writes, such as a saved
model, land there and not in the repository), without ``MANIFEX_DATA_DIR`` (examples must not
need the benchmark data), with a non-interactive matplotlib backend, and with every figure
closed afterwards. Thread settings (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``) are left as
the caller set them. The unit tests in ``tests/`` have their own ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem

# scripts that run when imported (`python -m manifex`, the torchrun worker of test_distributed):
# not modules to collect doctests from
collect_ignore = ["src/manifex/__main__.py", "tests/_torchrun_restart_worker.py"]


@pytest.fixture(autouse=True)
def _doctest_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if not isinstance(request.node, DoctestItem):
        yield
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(request.getfixturevalue("tmp_path"))
    monkeypatch.delenv("MANIFEX_DATA_DIR", raising=False)
    yield
    plt.close("all")
