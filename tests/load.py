"""Steady background load for rollout tests: threads sending REST inferences over keep-alive
connections, recording every status and answer."""

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlparse

from tests.conftest import iris_request

BODY = iris_request()


class Load:
    def __init__(self, url: str, model: str, threads: int = 4, headers: dict | None = None):
        self.host, self.port = urlparse(url).hostname, urlparse(url).port
        self.model, self.threads = model, threads
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.statuses: Counter = Counter()
        self.answers: list[tuple[float, int | None, str]] = []  # (time, class, model route)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def __enter__(self) -> "Load":
        self.started = time.monotonic()
        for w in self._workers:
            w.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(30)
        self.elapsed = time.monotonic() - self.started

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.total / self.elapsed

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while not self._stop.is_set():
            try:
                conn.request("POST", f"/v2/models/{self.model}/infer", BODY, self.headers)
                resp = conn.getresponse()
                data = resp.read()
                answer = json.loads(data)["outputs"][0]["data"][0] if resp.status == 200 \
                    else None
                with self._lock:
                    self.statuses[resp.status] += 1
                    self.answers.append((time.monotonic(), answer,
                                         resp.getheader("x-seldon-route", "")))
                    if resp.status != 200:
                        self.failures.append(f"{resp.status} {data[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                with self._lock:
                    self.statuses["error"] += 1
                    self.failures.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.close()
