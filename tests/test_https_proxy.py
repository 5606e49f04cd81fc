"""The station's HTTPS (scripts/station-https.sh + deploy/nginx/smearscope.conf.template): the
certificates it makes, the nginx site it renders (checked by `nginx -t`), and a real nginx from
Debian on 127.0.0.1 high ports in front of the page: the page over TLS verified against the station
CA, the plain-HTTP redirect, the CA download, a live stream through the proxy, the Secure cookie, and
headless chromium loading the login page over TLS."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from webkit import make_app

from common.wording import DISCLAIMER
from device.pipeline.live import LiveFrame
from device.store.store import utc_now
from device.web import request_limit
from device.web.server import make_server

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "station-https.sh"
TEMPLATE = REPO / "deploy" / "nginx" / "smearscope.conf.template"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
CHROMIUM = shutil.which("chromium")
needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (scripts/system-deps.sh: apt-get install nginx-light)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_https(tmp: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        ["bash", str(SCRIPT), "--tls-dir", str(tmp / "tls"), "--site", str(tmp / "site.conf"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"station-https.sh {args} exited {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def fingerprint(pem_file: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem_file.read_text())).hexdigest()


def nginx_main_conf(tmp: Path) -> Path:
    """A main nginx.conf around the rendered site, every path in `tmp` (Debian's site layout is the
    installer's business)."""
    run = tmp / "nginx"
    run.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""  # the CA file lives in a 0700 pytest folder
    conf = run / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\nerror_log {run}/error.log;\npid {run}/nginx.pid;\n"
        "events { worker_connections 64; }\n"
        "http {\n  access_log off;\n"
        + "".join(f"  {k}_temp_path {run}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi"))
        + f"  scgi_temp_path {run}/scgi;\n"
        + f"  include {tmp}/site.conf;\n}}\n"
    )
    return conf


# ------------------------------------------------------------------------------------ rendering


@needs_openssl
def test_site_renders_every_placeholder(tmp_path: Path) -> None:
    station_https(tmp_path, "--listen", "127.0.0.1", "--http-port", "18080", "--https-port", "18443",
                  "--upstream", "127.0.0.1:18081", "--max-upload-mb", "7",
                  "--name", "station.test")  # fmt: skip
    site = (tmp_path / "site.conf").read_text()
    placeholders = set(re.findall(r"@[A-Z_]+@", TEMPLATE.read_text()))
    assert len(placeholders) >= 8
    assert not re.search(r"@[A-Z_]+@", site), "a placeholder was left in the site"
    assert "listen 127.0.0.1:18443 ssl;" in site and "listen 127.0.0.1:18080;" in site
    assert "server 127.0.0.1:18081;" in site
    assert "return 301 https://$host:18443$request_uri;" in site
    assert f"ssl_certificate {tmp_path}/tls/server.crt;" in site
    # the proxy's body limit is the daemon's own request limit for the same max_upload_mb
    cfg = type("C", (), {"web": type("W", (), {"max_upload_mb": 7})()})()
    assert f"client_max_body_size {request_limit(cfg)};" in site
    streams = site[site.index("location ~ ^/live/") :]
    assert "proxy_buffering off;" in streams.split("}")[0]
    assert 'Strict-Transport-Security "max-age=' in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site


@needs_openssl
def test_listen_on_every_address_by_default(tmp_path: Path) -> None:
    station_https(tmp_path, "--name", "station.test")
    site = (tmp_path / "site.conf").read_text()
    assert "listen 443 ssl;" in site and "listen 80;" in site
    assert "return 301 https://$host$request_uri;" in site


@needs_openssl
@needs_nginx
def test_nginx_accepts_the_rendered_site(tmp_path: Path) -> None:
    station_https(tmp_path, "--listen", "127.0.0.1", "--http-port", str(_free_port()),
                  "--https-port", str(_free_port()), "--name", "station.test")  # fmt: skip
    conf = nginx_main_conf(tmp_path)
    r = subprocess.run([NGINX, "-t", "-c", str(conf), "-p", str(conf.parent)], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------------- certificates


@needs_openssl
def test_station_certificate_chains_to_its_ca_for_its_names(tmp_path: Path) -> None:
    station_https(tmp_path, "--name", "scope7", "--name", "scope7.local", "--ip", "192.0.2.7")
    tls = tmp_path / "tls"
    assert "OK" in openssl("verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt"))
    text = openssl("x509", "-noout", "-text", "-in", str(tls / "server.crt"))
    assert "DNS:scope7, DNS:scope7.local, IP Address:192.0.2.7" in text
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text
    assert "CA:TRUE" in openssl("x509", "-noout", "-text", "-in", str(tls / "ca.crt"))
    for key in ("ca.key", "server.key"):
        assert (tls / key).stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    assert (tls / "published-ca.crt").read_bytes() == (tls / "ca.crt").read_bytes()


@needs_openssl
def test_rerun_keeps_the_certificate_renew_and_new_names_reissue_it(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    station_https(tmp_path, "--name", "scope7")
    ca, cert = fingerprint(tls / "ca.crt"), fingerprint(tls / "server.crt")
    assert "kept" in station_https(tmp_path, "--name", "scope7").stdout
    assert fingerprint(tls / "server.crt") == cert
    station_https(tmp_path, "--name", "scope7", "--renew")
    renewed = fingerprint(tls / "server.crt")
    assert renewed != cert
    assert "names or addresses changed" in station_https(tmp_path, "--name", "scope8").stdout
    assert fingerprint(tls / "server.crt") != renewed
    assert fingerprint(tls / "ca.crt") == ca, "the CA tablets trust must never change by itself"


@needs_openssl
def test_renew_due_renews_only_a_due_certificate_and_leaves_the_site(tmp_path: Path) -> None:
    """The weekly timer's run: nothing when the certificate is good; a new one (for the same names
    given by hand, from the same CA) when fewer than 60 days are left; the site never rewritten."""
    tls, site = tmp_path / "tls", tmp_path / "site.conf"
    station_https(tmp_path, "--name", "scope7", "--ip", "192.0.2.7")
    ca, cert = fingerprint(tls / "ca.crt"), fingerprint(tls / "server.crt")
    site.write_text("# the admin's edits\n")
    out = station_https(tmp_path, "--renew-due").stdout
    assert "server certificate kept" in out and fingerprint(tls / "server.crt") == cert
    station_https(tmp_path, "--name", "scope7", "--ip", "192.0.2.7", "--renew", "--days", "30")
    due = fingerprint(tls / "server.crt")
    site.write_text("# the admin's edits\n")
    out = station_https(tmp_path, "--renew-due").stdout
    assert "fewer than 60 days left" in out
    assert fingerprint(tls / "server.crt") != due and fingerprint(tls / "ca.crt") == ca
    text = openssl("x509", "-noout", "-text", "-in", str(tls / "server.crt"))
    assert "DNS:scope7, IP Address:192.0.2.7" in text  # the names given by hand, not this host's
    assert "OK" in openssl("verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt"))
    assert site.read_text() == "# the admin's edits\n"


@needs_openssl
def test_renew_due_reports_a_due_clinic_certificate_and_keeps_it(tmp_path: Path) -> None:
    clinic = tmp_path / "clinic"
    station_https(clinic, "--name", "scope7.clinic.example", "--days", "20")
    ctls = clinic / "tls"
    station_https(tmp_path, "--cert", str(ctls / "server.crt"), "--key", str(ctls / "server.key"))
    r = station_https(tmp_path, "--renew-due", check=False)
    assert r.returncode == 1 and "the clinic's certificate" in r.stderr and "--cert" in r.stderr
    assert (tmp_path / "tls" / "server.crt").read_bytes() == (ctls / "server.crt").read_bytes()
    assert station_https(tmp_path / "none", "--renew-due", check=False).returncode == 1  # no CA yet


@needs_openssl
def test_clinic_certificate_is_used_and_kept(tmp_path: Path) -> None:
    clinic = tmp_path / "clinic"
    station_https(clinic, "--name", "scope7.clinic.example")  # stands in for the clinic's own CA
    station_https(tmp_path, "--name", "scope7")
    own_ca = (tmp_path / "tls" / "ca.crt").read_bytes()
    ctls = clinic / "tls"
    out = station_https(tmp_path, "--cert", str(ctls / "server.crt"), "--key", str(ctls / "server.key"),
                        "--ca", str(ctls / "ca.crt")).stdout  # fmt: skip
    tls = tmp_path / "tls"
    assert "clinic" in out
    assert (tls / "server.crt").read_bytes() == (clinic / "tls" / "server.crt").read_bytes()
    assert (tls / "published-ca.crt").read_bytes() == (clinic / "tls" / "ca.crt").read_bytes()
    assert "kept" in station_https(tmp_path, "--name", "scope7").stdout  # a re-install keeps it
    assert (tls / "server.crt").read_bytes() == (clinic / "tls" / "server.crt").read_bytes()
    station_https(tmp_path, "--name", "scope7", "--station-cert")
    assert (tls / "ca.crt").read_bytes() == own_ca
    assert "OK" in openssl("verify", "-CAfile", str(tls / "ca.crt"), str(tls / "server.crt"))


@needs_openssl
def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    station_https(a, "--name", "a")
    station_https(b, "--name", "b")
    r = station_https(tmp_path, "--cert", str(a / "tls" / "server.crt"),
                      "--key", str(b / "tls" / "server.key"), check=False)  # fmt: skip
    assert r.returncode != 0 and "is not the key of" in r.stderr
    assert not (tmp_path / "tls" / "server.crt").exists()


# ------------------------------------------------------------------------ a real nginx in front


@pytest.fixture
def proxied(tmp_path: Path):
    """The page (test app on a real waitress server) behind a real nginx with a station certificate
    for "localhost" and 127.0.0.1; yields (https base, http base, tls dir, services)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/system-deps.sh: apt-get install nginx-light)")
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    app, services = make_app(tmp_path, open_live_view=True)
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    http_port, https_port = _free_port(), _free_port()
    station_https(tmp_path, "--listen", "127.0.0.1", "--http-port", str(http_port), "--https-port",
                  str(https_port), "--upstream", f"127.0.0.1:{server.effective_port}", "--name", "localhost",
                  "--ip", "127.0.0.1")  # fmt: skip
    conf = nginx_main_conf(tmp_path)
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(conf.parent), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    https = f"https://localhost:{https_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.1)
        yield https, f"http://127.0.0.1:{http_port}", tmp_path / "tls", services
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.close()


def test_page_over_tls_verified_against_the_station_ca(proxied) -> None:
    https, _, tls, _ = proxied
    r = requests.get(https + "/login", verify=str(tls / "ca.crt"), timeout=10)
    assert r.status_code == 200 and DISCLAIMER in r.text
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    cookie = next(v for k, v in r.raw.headers.items() if k.lower() == "set-cookie")
    assert "; Secure" in cookie, "the daemon did not see the request as HTTPS through the proxy"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https + "/login", timeout=10)  # not trusted by the system CAs: no silent fallback


def test_plain_http_redirects_and_serves_the_ca(proxied) -> None:
    https, http, tls, _ = proxied
    r = requests.get(http + "/history?page=2", allow_redirects=False, timeout=10)
    assert r.status_code == 301
    port = https.rsplit(":", 1)[1]
    assert r.headers["Location"] == f"https://127.0.0.1:{port}/history?page=2"
    ca = requests.get(http + "/station-ca.crt", allow_redirects=False, timeout=10)
    assert ca.status_code == 200 and ca.content == (tls / "ca.crt").read_bytes()
    assert ca.headers["Content-Type"] == "application/x-x509-ca-cert"


def test_live_stream_passes_the_proxy_unbuffered(proxied) -> None:
    https, _, tls, services = proxied
    services.live.publish_frame(LiveFrame(np.full((48, 64, 3), 128, np.uint8), utc_now(), 0))
    with requests.get(https + "/live/stream.mjpg", verify=str(tls / "ca.crt"), stream=True, timeout=10) as r:
        assert r.status_code == 200
        first = next(r.iter_content(4096))
    assert b"Content-Type: image/jpeg" in first


def test_served_certificate_is_the_station_certificate(proxied) -> None:
    https, _, tls, _ = proxied
    port = int(https.rsplit(":", 1)[1])
    served = ssl.get_server_certificate(("127.0.0.1", port))
    assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(served)).hexdigest() == fingerprint(tls / "server.crt")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/system-deps.sh)")
def test_headless_chromium_loads_the_page_over_tls(proxied, tmp_path: Path) -> None:
    https, _, tls, _ = proxied
    # chromium is told to accept the station certificate; the test above checks it is the one served
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--ignore-certificate-errors", f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom",
           https + "/login"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert 'name="username"' in r.stdout and DISCLAIMER in r.stdout, r.stderr[-2000:]
