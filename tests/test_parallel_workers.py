"""tests/conftest.py shares the cores between pytest-xdist workers: the BLAS thread pool numpy loaded
holds the share conftest set, so conftest set it before numpy was first imported."""

from __future__ import annotations

import os

import pytest
from conftest import THREADS_SET


def test_numpy_blas_pool_holds_the_workers_share_of_the_cores() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    want = int(os.environ["OPENBLAS_NUM_THREADS"])
    if "OPENBLAS_NUM_THREADS" in os.environ[THREADS_SET].split(","):  # not the user's own value
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        assert want == max(1, (os.cpu_count() or 1) // workers)
    np.ones(1)  # numpy is loaded, and with it its BLAS
    # numpy's own BLAS (OpenCV's wheel brings a single-threaded one of its own)
    info = threadpoolctl.threadpool_info()
    pools = [p for p in info if "numpy" in p["filepath"] and p["user_api"] == "blas"]
    assert pools, "numpy loaded no BLAS library of its own"
    assert {p["num_threads"] for p in pools} == {want}
