"""A small client of the bench's own panel API (DRF token auth)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import requests

from bench import config


@dataclass
class Call:
    status: int  # 0: no HTTP answer
    latency_s: float
    started_at: float  # epoch seconds, this process's clock
    body: dict | list | None = None
    nbytes: int = 0
    error: str = ""


class Api:
    """One token; one keep-alive session per thread (requests.Session is not thread-safe)."""

    def __init__(self, token: str, base: str = config.WEB_URL, timeout: float = 60.0):
        self.base = base
        self.timeout = timeout
        self.headers = {"Authorization": f"Token {token}"}
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self.headers)
        return session

    def _call(self, method: str, path: str, *, keep_body: bool = True, **kwargs) -> Call:
        started_at = time.time()
        t0 = time.perf_counter()
        try:
            response = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
            content = response.content
        except requests.RequestException as exc:
            return Call(0, time.perf_counter() - t0, started_at, error=exc.__class__.__name__)
        latency = time.perf_counter() - t0
        body = None
        if keep_body:
            try:
                body = response.json()
            except ValueError:
                body = None
        return Call(response.status_code, latency, started_at, body, len(content))

    def create_site(self, name: str) -> Call:
        # Form-encoded, as the brief's `site=<name>` (and curl -d) sends it.
        return self._call("POST", "/api/sites", data={"site": name})

    def list_sites(self) -> Call:
        # The body can be large (every site); only its size matters here.
        return self._call("GET", "/api/sites", keep_body=False)

    def delete_site(self, name: str) -> Call:
        return self._call("DELETE", f"/api/sites/{name}")

    def back_up_site(self, name: str) -> Call:
        return self._call("POST", f"/api/sites/{name}/backups")

    def restore_site(self, name: str, backup: str) -> Call:
        return self._call("POST", f"/api/sites/{name}/restore", json={"backup": backup})

    def clone_site(self, name: str, new_name: str, backup: str | None = None) -> Call:
        body = {"site": new_name} if backup is None else {"site": new_name, "backup": backup}
        return self._call("POST", f"/api/sites/{name}/clone", json=body)
