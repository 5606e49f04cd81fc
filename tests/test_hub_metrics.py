"""The hub's /metrics (hub/metrics.py): a hub user's token, process and build metrics, records by
answer, devices from the database; gunicorn workers' counts add up (multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from hubkit import Hub
from test_hub_api import record

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub(tmp_path):
    return Hub(f"sqlite:///{tmp_path / 'hub.db'}")


def scrape(hub) -> str:
    resp = hub.client().get("/metrics", headers=hub.usr())
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    return resp.get_data(as_text=True)


def sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start!r} in /metrics")


def test_metrics_need_a_hub_users_token(hub):
    c = hub.client()
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.get("/metrics", headers=hub.dev()).status_code == 401  # a device reads no fleet figures
    assert c.get("/metrics", headers=hub.usr()).status_code == 200


def test_process_build_records_and_devices(hub):
    text = scrape(hub)
    assert sample(text, "process_resident_memory_bytes") > 0
    assert "python_info{" in text
    assert "smearscope_hub_build_info{" in text
    assert sample(text, 'smearscope_hub_records_total{answer="accepted"}') == 0
    assert sample(text, 'smearscope_hub_devices{state="active"}') == 1
    assert "smearscope_hub_device_last_contact_seconds{" not in text  # scope-1 never called

    rec = record(id=str(uuid.uuid4()))
    for _ in range(2):  # the second time it is a duplicate
        hub.client().post("/api/v1/results", json={"records": [rec]}, headers=hub.dev())
    text = scrape(hub)
    assert sample(text, 'smearscope_hub_records_total{answer="accepted"}') == 1
    assert sample(text, 'smearscope_hub_records_total{answer="duplicate"}') == 1
    assert 0 <= sample(text, 'smearscope_hub_device_last_contact_seconds{device="scope-1"}') < 600
    assert sample(text, 'smearscope_hub_requests_total{code="200",endpoint="api.post_results"}') == 2
    assert (
        sample(text, 'smearscope_hub_requests_total{code="200",endpoint="metrics.metrics"}') == 1
    )  # the 1st scrape


_WORKER = textwrap.dedent(
    """
    import sys
    from hub.metrics import HubMetrics, use_multiprocess_dir
    use_multiprocess_dir(sys.argv[1]) if sys.argv[2] == "first" else None
    m = HubMetrics(None, commit="c0ffee")
    m.count_records({"accepted": int(sys.argv[3])})
    if sys.argv[2] == "scrape":
        print(m.render().decode())
    """
)


def test_gunicorn_workers_counts_add_up(tmp_path):
    """Each process counts into $PROMETHEUS_MULTIPROC_DIR; a scrape in any of them sums them all."""
    folder = tmp_path / "mp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    env.pop("SMEARSCOPE_GIT_COMMIT", None)

    def run(role: str, n: int) -> str:
        out = subprocess.run(
            [sys.executable, "-c", _WORKER, str(folder), role, str(n)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout

    folder.mkdir()
    (folder / "counter_stale.db").write_bytes(b"from an earlier run")
    run("first", 2)  # use_multiprocess_dir empties the folder first
    run("worker", 3)
    text = run("scrape", 4)
    assert sample(text, 'smearscope_hub_records_total{answer="accepted"}') == 9
    assert 'smearscope_hub_build_info{commit="c0ffee"' in text
    assert "process_resident_memory_bytes" not in text  # no per-process collectors in this mode
