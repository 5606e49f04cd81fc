"""Hub abuse probe: a hostile second device, a token guesser and malformed input against a real
`smearscope-hub serve` on loopback (127.0.0.1 only, a throwaway SQLite or PostgreSQL database), bounded in
time. Prints, per scenario, what held; exit status 1 when anything did not.

    .venv/bin/python benchmarks/abuse_hub.py [--db sqlite|postgres|URL] [--json OUT]

Scenarios: cross-device writes (reviews, slide records, sample rows, stolen record ids), every route as
the wrong device / no token / a garbage token, image-existence probing, deeply nested and non-strict
JSON, bogus capture times, CSV formula injection, oversized and gzip-bomb bodies, token guessing, a
request flood (rate limits), and stalled uploads against fewer server threads. The hub trusts one proxy
hop (X-Forwarded-For), so each scenario can act from its own client address without leaving loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import requests

from hub import db as hubdb
from hub import tokens
from hub.app import create_app
from hub.pgcluster import TempPostgres, free_port

DEADLINE_S = 120.0  # the whole probe; each request also has a timeout
T = 10.0


class Probe:
    def __init__(self, base: str, a: str, b: str, user: str) -> None:
        self.base, self.tok = base, {"a": a, "b": b, "user": user}
        self.results: list[dict[str, Any]] = []
        self.server_errors = 0
        self.t0 = time.monotonic()

    def call(self, method: str, path: str, who: str | None = None, addr: str = "10.0.0.1", **kw: Any):  # noqa: ANN201
        if time.monotonic() - self.t0 > DEADLINE_S:
            raise TimeoutError(f"the probe ran past {DEADLINE_S:.0f} s")
        headers = {"X-Forwarded-For": addr, **kw.pop("headers", {})}
        if who in self.tok:
            headers["Authorization"] = f"Bearer {self.tok[who]}"
        elif who:
            headers["Authorization"] = f"Bearer {who}"
        r = requests.request(
            method, self.base + path, headers=headers, timeout=T, allow_redirects=False, **kw
        )
        if r.status_code >= 500:
            self.server_errors += 1
        return r

    def held(self, name: str, ok: bool, detail: str) -> None:
        self.results.append({"scenario": name, "held": bool(ok), "detail": detail})
        print(f"[{'held' if ok else 'FAIL'}] {name}: {detail}", flush=True)


def record(**kw: Any) -> dict[str, Any]:
    rec = {
        "id": str(uuid.uuid4()),
        "seq": 1,
        "sample_id": None,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "source": "camera",
        "kind": "classification",
        "review_of": None,
        "models": [{"name": "m", "sha256": "0" * 64}],
        "probabilities": {"Benign": 0.1, "Pre": 0.9},
        "label": "Pre",
        "confidence": 0.9,
        "abstained": False,
        "reason": None,
        "quality": {"ok": True},
        "image_sha256": None,
        "heatmap_sha256": None,
    }
    rec.update(kw)
    return rec


def jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def slide_rows(p: Probe, slide: str) -> dict[str, int]:
    rows = p.call("GET", f"/api/v1/results?sample={slide}&limit=1000", "user").json()["results"]
    out: dict[str, int] = {}
    for r in rows:
        key = f"{r['hub']['device']}:{r['label']}{' (uncertain)' if r['abstained'] else ''}"
        out[key] = out.get(key, 0) + 1
    return out


def ownership(p: Probe) -> None:
    slide = str(uuid.uuid4())
    sure = [record(seq=i, sample_id=slide, label="Pre") for i in range(3)]
    unsure = [
        record(seq=3 + i, sample_id=slide, label="Early", abstained=True, confidence=0.4) for i in range(2)
    ]
    p.call("POST", "/api/v1/results", "a", json={"records": sure + unsure})
    p.call("POST", "/api/v1/samples", "a", json={"samples": [_sample(slide, "A-SLIDE")]})
    before = slide_rows(p, slide)
    attacks = [
        record(seq=10 + i, kind="review", source="review", review_of=u["id"], label="Benign")
        for i, u in enumerate(unsure)
    ]
    attacks += [record(seq=20 + i, sample_id=slide, label="Benign") for i in range(7)]
    attacks += [{**sure[0], "label": "Benign"}]  # A's record id, sent by B
    answer = p.call("POST", "/api/v1/results", "b", json={"records": attacks}).json()
    refused = sum(1 for a in answer["results"] if a["status"] == "rejected")
    hijack = p.call(
        "POST", "/api/v1/samples", "b", json={"samples": [_sample(slide, "HIJACK", "finished")]}
    ).json()
    refused += sum(1 for a in hijack["results"] if a["status"] == "rejected")
    after = slide_rows(p, slide)
    total = len(attacks) + 1
    p.held(
        "cross-device writes",
        refused == total and after == before,
        f"{refused}/{total} refused as the wrong device; A's slide before {before} after {after}",
    )


def _sample(sid: str, slide: str, status: str = "open") -> dict[str, Any]:
    return {
        "id": sid,
        "slide_id": slide,
        "status": status,
        "started_at": "2026-11-30T01:00:00Z",
        "summary": None,
    }


def route_walk(p: Probe, url: str) -> None:
    """Every route of the app (from its url_map) as device B, no token and a garbage token."""
    app = create_app(url, migrate=False)
    rid = p.call("GET", "/api/v1/results?device=scope-a&limit=1", "user").json()["results"][0]["id"]
    sha_a = hashlib.sha256(jpeg(1)).hexdigest()
    snapshot = p.call("GET", "/api/v1/results?device=scope-a&limit=1000", "user").text
    walked = refused_writes = 0
    for rule in app.url_map.iter_rules():
        path = rule.rule
        for arg in rule.arguments:
            value = sha_a if "sha" in arg else "hub.css" if arg == "filename" else rid
            path = path.replace(f"<{arg}>", value).replace(f"<path:{arg}>", value)
        for method in sorted(rule.methods - {"OPTIONS"}):
            for who, addr in (("b", "10.0.1.1"), (None, "10.0.1.2"), ("x" * 43, "10.0.1.3")):
                kw: dict[str, Any] = {}
                if method in ("POST", "PUT"):
                    kw["json"] = {
                        "records": [record(review_of=rid, kind="review", source="review")],
                        "sha256": [sha_a],
                    }
                r = p.call(method, path, who, addr=addr, **kw)
                walked += 1
                if method in ("POST", "PUT") and r.status_code >= 400:
                    refused_writes += 1
    after = p.call("GET", "/api/v1/results?device=scope-a&limit=1000", "user").text
    p.held(
        "every route as the wrong device / no token / garbage token",
        after == snapshot,
        f"{walked} requests over {len(list(app.url_map.iter_rules()))} routes; "
        f"{refused_writes} writes answered 4xx; "
        f"device A's records unchanged: {after == snapshot}",
    )


def image_probing(p: Probe) -> None:
    shas = []
    for i in range(1, 51):
        data = jpeg(i)
        shas.append(hashlib.sha256(data).hexdigest())
        p.call("PUT", f"/api/v1/images/{shas[-1]}", "a", data=data)
    fresh = [hashlib.sha256(os.urandom(16)).hexdigest() for _ in range(50)]
    head_a = sum(p.call("HEAD", f"/api/v1/images/{s}", "b").status_code == 200 for s in shas)
    head_f = sum(p.call("HEAD", f"/api/v1/images/{s}", "b").status_code == 200 for s in fresh)
    have = p.call("POST", "/api/v1/images/have", "b", json={"sha256": shas}).json()["have"]
    get = sum(p.call("GET", f"/api/v1/images/{s}", "b").status_code == 200 for s in shas[:10])
    rec = p.call("POST", "/api/v1/results", "b", json={"records": [record(image_sha256=shas[0])]}).json()
    p.held(
        "image-existence probing by another device",
        head_a == head_f == 0 and not have and get == 0 and rec["results"][0]["status"] == "deferred",
        f"HEAD 200 for A's images {head_a}/50 (random hashes {head_f}/50); "
        f"/images/have found {len(have)}/50; "
        f"GET bytes {get}/10; a record naming A's image: {rec['results'][0]['status']}",
    )


def nested_json(p: Probe) -> None:
    out = []
    ok = True
    for depth in (10, 33, 1_000, 100_000):
        body = b'{"records": ' + b"[" * depth + b"]" * depth + b"}"
        t = time.perf_counter()
        code = p.call("POST", "/api/v1/results", "a", data=body).status_code
        out.append(f"depth {depth}: {code} in {(time.perf_counter() - t) * 1000:.0f} ms")
        ok &= code == (422 if depth <= 32 else 400)
    bomb = gzip.compress(b"[" * 5_000_000)
    code = p.call("POST", "/api/v1/results", "a", data=bomb, headers={"Content-Encoding": "gzip"}).status_code
    out.append(f"gzip of 5 MB '[': {code}")
    ok &= code == 400
    for name, body in (
        ("NaN", b'{"records":[NaN]}'),
        ("5000-digit int", b'{"records":[' + b"9" * 5000 + b"]}"),
    ):
        code = p.call("POST", "/api/v1/results", "a", data=body).status_code
        out.append(f"{name}: {code}")
        ok &= code == 422
    p.held("nested and non-strict JSON", ok, "; ".join(out))


def bogus_times(p: Probe) -> None:
    times = {
        "year 1": "0001-01-01T00:00:00Z",
        "1970": "1970-01-01T00:00:00Z",
        "year 9999": "9999-12-31T23:59:59Z",
        "year 1 +05:00": "0001-01-01T00:00:00+05:00",
        "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    recs = {k: record(captured_at=v) for k, v in times.items()}
    answer = p.call("POST", "/api/v1/results", "a", json={"records": list(recs.values())}).json()["results"]
    out, ok = [], True
    for (name, rec), a in zip(recs.items(), answer, strict=True):
        if a["status"] == "accepted":
            flag = p.call("GET", f"/api/v1/results/{rec['id']}", "user").json()["hub"]["time_flag"]
            out.append(f"{name}: accepted, flag={flag!r}")
            ok &= (flag is None) == (name == "now")
        else:
            out.append(f"{name}: {a['status']} ({a.get('reason')})")
            ok &= name == "year 1 +05:00"
    p.held("bogus capture times (stored and flagged, or refused)", ok, "; ".join(out))


def csv_injection(p: Probe, session: requests.Session) -> None:
    evil = ['=HYPERLINK("http://x","y")', "@SUM(A1:A9)", "+1+1", "-1+cmd|' /C calc'!A0", " \t=1", "\r\n@x"]
    recs = [record(seq=i, label=e, reason=e) for i, e in enumerate(evil)]
    p.call("POST", "/api/v1/results", "a", json={"records": recs})
    text = session.get(p.base + "/export/results.csv", timeout=T).text
    cells = [
        c
        for row in csv.reader(io.StringIO(text))
        for c in row
        if any(c.lstrip(" \t\r\n") == e.lstrip(" \t\r\n") or c == "'" + e for e in evil)
    ]
    live = [c for c in cells if c.lstrip(" \t\r\n")[:1] in ("=", "+", "-", "@") and not c.startswith("'")]
    p.held(
        "CSV formula injection",
        bool(cells) and not live,
        f"{len(cells)} device-text cells, {len(live)} still a formula",
    )


def bodies(p: Probe) -> None:
    big = p.call("POST", "/api/v1/results", "a", data=b"x" * (17 * 2**20)).status_code
    bomb = p.call(
        "POST",
        "/api/v1/results",
        "a",
        data=gzip.compress(b" " * (40 * 2**20)),
        headers={"Content-Encoding": "gzip"},
    ).status_code

    def chunks():  # no Content-Length: only the server's own cap stops it
        for _ in range(40):
            yield b"x" * 2**20

    try:
        chunked = p.call("POST", "/api/v1/results", "a", data=chunks()).status_code
    except requests.RequestException as exc:
        chunked = f"connection closed ({type(exc).__name__})"
    p.held(
        "oversized bodies",
        big == 413 and bomb == 413 and (chunked in (413, 400) or isinstance(chunked, str)),
        f"17 MB: {big}; gzip bomb (40 MB unpacked): {bomb}; 40 MB chunked: {chunked}",
    )


def guessing_and_flood(p: Probe) -> None:
    codes = [p.call("GET", "/api/v1/ping", uuid.uuid4().hex, addr="10.0.9.9").status_code for _ in range(60)]
    first429 = codes.index(429) + 1 if 429 in codes else None
    good_elsewhere = p.call("GET", "/api/v1/ping", "a", addr="10.0.9.10").status_code
    login = p.call("POST", "/login", None, addr="10.0.9.9", data={"token": "guess"}).status_code
    p.held(
        "token guessing (failed-auth limit per address)",
        first429 is not None and good_elsewhere == 200 and login == 429,
        f"60 wrong tokens from one address: {codes.count(401)} answered 401, "
        f"then 429 from request {first429}; "
        f"dashboard login from that address: {login}; a device elsewhere: {good_elsewhere}",
    )
    t = time.perf_counter()
    n = limited = 0
    with requests.Session() as s:
        s.headers.update({"Authorization": f"Bearer {p.tok['b']}", "X-Forwarded-For": "10.0.9.20"})
        while time.perf_counter() - t < 45 and not limited:
            r = s.get(p.base + "/api/v1/ping", timeout=T)
            n += 1
            limited = r.status_code == 429
    other = p.call("GET", "/api/v1/ping", "a", addr="10.0.9.21").status_code
    p.held(
        "request flood by one device (per-token limit)",
        limited and other == 200,
        f"{n} pings in {time.perf_counter() - t:.1f} s before 429: {limited}; "
        f"another device meanwhile: {other}",
    )


def stalled_uploads(url: str, token: str, n: int = 8) -> dict[str, Any]:
    """N uploads that send headers and one byte of body, then stop, against a hub with fewer threads
    than N; meanwhile /healthz is timed. PostgreSQL: gunicorn 2 workers x 2 threads (bodies are read in
    worker threads; --body-timeout-s 5); SQLite: waitress 1 x 4 (it buffers bodies before a thread)."""
    pg = not url.startswith("sqlite")
    proc, base = start(
        url,
        "",
        extra=["--workers", "2" if pg else "1", "--threads", "2" if pg else "4", "--body-timeout-s", "5"],
    )
    socks, latencies, answered = [], [], 0
    try:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=T)
            s.sendall(
                f"POST /api/v1/results HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
            )
            socks.append(s)
        t0 = time.monotonic()
        recovered = None
        while time.monotonic() - t0 < 30 and recovered is None:
            t = time.perf_counter()
            try:
                requests.get(base + "/healthz", timeout=30)
                latencies.append(time.perf_counter() - t)
            except requests.RequestException:
                latencies.append(float("inf"))
            if latencies[-1] < 1.0 and time.monotonic() - t0 > 1.0:
                recovered = time.monotonic() - t0
            time.sleep(0.25)
        for s in socks:
            s.settimeout(1)
            with contextlib.suppress(OSError):
                answered += s.recv(64).startswith(b"HTTP/1.1 408")
    finally:
        for s in socks:
            s.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return {
        "server": "gunicorn 2x2" if pg else "waitress 1x4",
        "stalled": n,
        "answered_408": answered,
        "healthz_max_s": max(latencies),
        "recovered_after_s": None if recovered is None else round(recovered, 1),
    }


def start(url: str, rate_limit: str, extra: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "hub.cli", "serve", "--db", url, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--proxy-hops", "1", "--rate-limit", rate_limit, *(extra or ["--threads", "4"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.get(base + "/healthz", timeout=1)
            return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the hub did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="sqlite", help="'sqlite', 'postgres' (a throwaway cluster) or a URL")
    ap.add_argument("--rate-limit", default="300/minute", help="per-token limit for the flood scenario")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="abuse-hub-"))
    pg = None
    if args.db == "sqlite":
        url = f"sqlite:///{tmp / 'hub.db'}"
    elif args.db == "postgres":
        pg = TempPostgres().start()
        url = pg.create_database("abuse")
    else:
        url = args.db
    engine = hubdb.make_engine(url)
    hubdb.upgrade(engine)
    with hubdb.session_factory(engine)() as s:
        a, b = tokens.add_device(s, "scope-a"), tokens.add_device(s, "scope-b")
        user = tokens.add_user(s, "reader")
    engine.dispose()
    proc, base = start(url, args.rate_limit)
    p = Probe(base, a, b, user)
    t = time.perf_counter()
    try:
        session = requests.Session()
        session.headers["X-Forwarded-For"] = "10.0.0.5"
        session.post(base + "/login", data={"token": user}, timeout=T)
        ownership(p)
        route_walk(p, url)
        image_probing(p)
        nested_json(p)
        bogus_times(p)
        csv_injection(p, session)
        bodies(p)
        guessing_and_flood(p)
        st = stalled_uploads(url, a)
        p.held(
            "stalled uploads vs page latency",
            st["recovered_after_s"] is not None
            and (st["answered_408"] == st["stalled"] or st["server"].startswith("waitress")),
            f"{st['stalled']} stalled uploads on {st['server']} (body timeout 5 s): /healthz slowest "
            f"{st['healthz_max_s']:.1f} s, under 1 s again after {st['recovered_after_s']} s; "
            f"{st['answered_408']} stalled uploads answered 408",
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        if pg is not None:
            pg.stop()
    p.held("no 5xx answer in the whole probe", p.server_errors == 0, f"{p.server_errors} server errors")
    elapsed = time.perf_counter() - t
    held = sum(r["held"] for r in p.results)
    print(
        f"{held}/{len(p.results)} scenarios held in {elapsed:.1f} s "
        f"({'sqlite' if url.startswith('sqlite') else 'postgresql'})"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"database": args.db, "elapsed_s": elapsed, "scenarios": p.results}, indent=2)
        )
    return 0 if held == len(p.results) else 1


if __name__ == "__main__":
    sys.exit(main())
