"""Scheduler state on disk: one SQLite table of JSON documents keyed by (kind, name).

Every change is written before it is acknowledged, so a restarted scheduler (even after
kill -9) finds every resource, version, placement and replica address as it left them."""

import hashlib
import json
import sqlite3
from pathlib import Path


def _digest(body: str) -> bytes:
    return hashlib.blake2b(body.encode(), digest_size=8).digest()


class Store:
    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "scheduler.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (kind TEXT, name TEXT, body TEXT, "
                        "PRIMARY KEY (kind, name))")
        # what each row holds (a digest), so a put that changes nothing writes nothing: an
        # agent reconnecting touches every model it holds, most of them unchanged
        self._written: dict[tuple[str, str], bytes] = {}

    def put(self, kind: str, name: str, doc: dict) -> None:
        body = json.dumps(doc, sort_keys=True)
        digest = _digest(body)
        if self._written.get((kind, name)) == digest:
            return
        self.db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)", (kind, name, body))
        self._written[(kind, name)] = digest

    def delete(self, kind: str, name: str) -> None:
        self.db.execute("DELETE FROM docs WHERE kind = ? AND name = ?", (kind, name))
        self._written.pop((kind, name), None)

    def all(self, kind: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT name, body FROM docs WHERE kind = ?", (kind,))
        out = {}
        for name, body in rows:
            self._written[(kind, name)] = _digest(body)
            out[name] = json.loads(body)
        return out

    def close(self) -> None:
        self.db.close()
