"""Shared fixtures. Keep this small; see /work/notes/fixtures.md for what each returns.

`tiny_bundle` is a tmp copy of tests/data/tiny-bundle (made by tests/make_tiny_bundle.py, signed with the
key this test run made for itself): a real
full-int8 MobileNetV2 bundle (64x64 uint8 input, labels Benign/Early/Pre/Pro, probabilities + CAM
outputs) that loads with LiteRT alone, so device-side tests need no TensorFlow.
"""

from __future__ import annotations

import os

#: The thread-pool variables conftest sets, and the variable that lists those it set (not the user).
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
THREADS_SET = "SMEARSCOPE_TEST_THREADS_SET"


def _share_the_cores() -> None:
    """Give each pytest-xdist worker its share of the cores for the BLAS, OpenMP and TensorFlow thread
    pools (before numpy or TensorFlow is imported; daemons the tests start inherit it). Two workers each
    spinning two OpenBLAS threads on two cores make a 1280 x 1280 `eigh` (the content check's
    covariance) ten times slower than one thread each. A value the user set wins; one the xdist
    controller's conftest set is re-shared in each worker."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    ours = set(filter(None, os.environ.get(THREADS_SET, "").split(",")))
    for var in THREAD_VARS:
        if var not in os.environ or var in ours:
            os.environ[var] = threads
            ours.add(var)
    os.environ[THREADS_SET] = ",".join(sorted(ours))


_share_the_cores()

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import pytest  # noqa: E402
from make_tiny_bundle import LABELS, TEST_PUB, synth_smear, write_dataset  # noqa: E402
from make_tiny_bundle import SIGNED_TINY as TINY_BUNDLE_SRC  # noqa: E402

# Fixture bundles are signed with the test key; trust it in this process and every daemon a test starts
# (device/models/signing.py adds $SMEARSCOPE_TRUSTED_KEYS to [models] trusted_keys). Tests about signatures
# use keys of their own.
os.environ["SMEARSCOPE_TRUSTED_KEYS"] = str(TEST_PUB)


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """Path to a fresh copy of the tiny int8 bundle (safe to tamper with)."""
    dst = tmp_path / "tiny-bundle"
    shutil.copytree(TINY_BUNDLE_SRC, dst)
    return dst


@pytest.fixture
def sample_images(tmp_path: Path) -> list[Path]:
    """Four generated RGB JPEG smears (one per label, 96x96), in tmp_path/samples/."""
    import numpy as np

    rng = np.random.default_rng(1)
    folder = tmp_path / "samples"
    folder.mkdir()
    paths = []
    for label in LABELS:
        path = folder / f"{label}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(synth_smear(label, rng), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A folder of label folders (Benign/Early/Pre/Pro, 6 generated JPEGs each) the tiny bundle
    classifies well above chance."""
    root = tmp_path / "dataset"
    write_dataset(root, 6, seed=7)
    return root


# The station's web app for the tests of its pages (tests/test_web*.py, tests/test_clinic.py). webkit is
# imported inside the fixtures so that collecting the other tests never loads Flask.


@pytest.fixture
def app_svc(tmp_path: Path):
    """(Flask app, Services) of a station in tmp_path with the users `tech` and `admin`
    (tests/webkit.py `make_app`)."""
    from webkit import make_app

    return make_app(tmp_path)


def _logged_in(app, who: str):
    from webkit import login

    c = app.test_client()
    assert login(c, who).status_code == 302
    return c


@pytest.fixture
def client(app_svc):
    """A test client logged in as the technician `tech`."""
    return _logged_in(app_svc[0], "tech")


@pytest.fixture
def admin(app_svc):
    """A test client logged in as `admin`."""
    return _logged_in(app_svc[0], "admin")


@pytest.fixture
def tech(app_svc):
    """A test client logged in as the technician `tech` (beside `admin` in one test)."""
    return _logged_in(app_svc[0], "tech")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with a `slow` test (training, conversion) run first, the rest in their order: xdist
    (`make test`: --dist loadfile --no-loadscope-reorder) hands out files in this order, so the longest
    start first and the short ones fill in at the end instead of one long file running alone last."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: each file's own order is kept
