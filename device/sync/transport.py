"""HTTP(S) client for the hub API: bearer token, certificate verification (a clinic may pin its own CA
with `ca_file`), gzip request bodies, an optional HTTP proxy, bounded timeouts."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import urllib3

from device import __version__
from device.config import SyncConfig

#: The [sync] defaults; device/config.py holds them (and their ranges).
_SYNC = SyncConfig()


class HubError(Exception):
    """A push did not complete; nothing the hub has not confirmed is marked synced."""


class HubUnreachable(HubError):
    """Network down, timeout, reset, or the hub answered 5xx/429: try again later."""


class HubRefused(HubError):
    """The hub refused the request as a whole (bad token 401/403, unexpected 4xx)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class BatchAnswer:
    answers: list[tuple[str, str, str | None]]  # (id, status, reason)
    clock_skew_s: float | None


class HubClient:
    """One `requests.Session` (keep-alive) to one hub."""

    def __init__(
        self,
        hub_url: str,
        token: str,
        *,
        ca_file: str = "",
        proxy: str = "",
        timeout_s: float = _SYNC.timeout_s,
    ):
        self.base = hub_url.rstrip("/") + "/api/v1"
        self.timeout = timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["User-Agent"] = f"smearscope/{__version__}"
        # Never False: HTTPS is always verified. Passed on every request because requests lets
        # REQUESTS_CA_BUNDLE in the environment override a session-level setting.
        self.verify: str | bool = ca_file or True
        if proxy:
            self.session.proxies = {"http": proxy, "https": proxy}

    @classmethod
    def from_config(cls, sync_config: Any) -> HubClient:
        return cls(
            sync_config.hub_url,
            sync_config.token,
            ca_file=sync_config.ca_file,
            proxy=sync_config.proxy,
            timeout_s=sync_config.timeout_s,
        )

    def close(self) -> None:
        self.session.close()

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        try:
            resp = self.session.request(
                method, self.base + path, timeout=self.timeout, verify=self.verify, **kw
            )
        except requests.exceptions.SSLError as exc:
            raise HubRefused(f"TLS verification failed for {self.base}: {exc}", 495) from exc
        except requests.RequestException as exc:
            raise HubUnreachable(f"hub unreachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise HubUnreachable(f"hub answered {resp.status_code} to {method} {path}")
        if resp.status_code in (401, 403):
            raise HubRefused(f"hub refused the token ({resp.status_code}): {_reason(resp)}", resp.status_code)
        return resp

    def ping(self) -> dict[str, Any]:
        resp = self._request("GET", "/ping")
        if resp.status_code != 200:
            raise HubRefused(f"ping answered {resp.status_code}: {_reason(resp)}", resp.status_code)
        return _json(resp)

    def missing_images(self, shas: Iterable[str]) -> set[str]:
        """Which of these hashes the hub lacks (one query instead of a HEAD per image)."""
        shas = list(shas)
        if not shas:
            return set()
        resp = self._post_json("/images/have", {"sha256": shas})
        if resp.status_code != 200:
            raise HubRefused(f"image query answered {resp.status_code}: {_reason(resp)}", resp.status_code)
        return set(_json(resp).get("missing", []))

    def put_image(self, sha: str, data: bytes) -> None:
        """Upload JPEG bytes (already compressed, so no gzip). 200/201 both mean the hub has them."""
        resp = self._request("PUT", f"/images/{sha}", data=data, headers={"Content-Type": "image/jpeg"})
        if resp.status_code not in (200, 201):
            raise HubRefused(f"image {sha} refused ({resp.status_code}): {_reason(resp)}", resp.status_code)

    def post_results(self, records: list[dict[str, Any]]) -> BatchAnswer:
        """Push one batch; returns the hub's answer per record."""
        body = {"records": records, "sent_at": _now_iso()}
        resp = self._post_json("/results", body)
        if resp.status_code in (200, 422):
            data = _json(resp, required=False)
            if isinstance(data, dict) and isinstance(data.get("results"), list):
                answers = [
                    (str(a.get("id")), str(a.get("status")), a.get("reason"))
                    for a in data["results"]
                    if isinstance(a, dict)
                ]
                return BatchAnswer(answers, data.get("clock_skew_s"))
        raise HubRefused(f"batch refused ({resp.status_code}): {_reason(resp)}", resp.status_code)

    def post_samples(self, samples: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
        """Upsert samples (slide id, status, summary); answers (id, stored|unchanged|rejected, reason).
        A hub without the endpoint (404) gets none and that is not an error."""
        if not samples:
            return []
        resp = self._post_json("/samples", {"samples": samples})
        if resp.status_code == 404:
            return []
        data = _json(resp, required=False)
        if (
            resp.status_code in (200, 422)
            and isinstance(data, dict)
            and isinstance(data.get("results"), list)
        ):
            return [(str(a.get("id")), str(a.get("status")), a.get("reason")) for a in data["results"]]
        raise HubRefused(f"samples refused ({resp.status_code}): {_reason(resp)}", resp.status_code)

    # -- updates flowing down (device/sync/updates.py) ---------------------------------------------

    def current_models(self) -> dict[str, Any] | None:
        """The bundle set the hub says is current for this station (None: none published; a hub
        without the endpoint answers 404 and that is not an error either)."""
        resp = self._request("GET", "/models/current")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise HubRefused(f"models query answered {resp.status_code}: {_reason(resp)}", resp.status_code)
        data = _json(resp)
        return data.get("set") if isinstance(data, dict) else None

    def report_models(self, report: dict[str, Any]) -> None:
        resp = self._post_json("/models/installed", report)
        if resp.status_code not in (200, 404):
            raise HubRefused(f"models report refused ({resp.status_code}): {_reason(resp)}", resp.status_code)

    def download(self, sha: str, part: Path, size: int) -> int:
        """Append the rest of published file `sha` to `part` (resuming with a Range request when
        `part` already holds a prefix). Returns the bytes received; a cut connection raises
        HubUnreachable and leaves what arrived in `part` for the next attempt."""
        have = part.stat().st_size if part.exists() else 0
        if have >= size:
            return 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = self._request("GET", f"/models/files/{sha}", headers=headers, stream=True)
        got = 0
        with resp:
            if resp.status_code == 206 and have:
                mode = "ab"
            elif resp.status_code == 200:
                mode = "wb"  # the hub ignored the range: start over
            else:
                raise HubRefused(f"file {sha} answered {resp.status_code}: {_reason(resp)}", resp.status_code)
            try:
                with open(part, mode) as f:
                    try:
                        for block in resp.iter_content(1 << 14):  # small reads: a cut keeps most bytes
                            f.write(block)
                            got += len(block)
                    finally:
                        f.flush()
                        os.fsync(f.fileno())
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise HubUnreachable(f"download of {sha[:12]} cut after {have + got} bytes: {exc}") from exc
        return got

    def _post_json(self, path: str, payload: Any) -> requests.Response:
        raw = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        data = gzip.compress(raw, compresslevel=5)
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return self._request("POST", path, data=data, headers=headers)


def _json(resp: requests.Response, *, required: bool = True) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        if required:
            raise HubUnreachable(f"hub answered {resp.status_code} with a non-JSON body") from exc
        return None


def _reason(resp: requests.Response) -> str:
    try:
        data = resp.json()
        return str(data.get("reason") or data.get("error") or data)[:300]
    except ValueError:
        return resp.text[:300]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
