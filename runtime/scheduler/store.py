"""Scheduler state on disk: one SQLite table of JSON documents keyed by (kind, name).

Every change is written before it is acknowledged, so a restarted scheduler (even after
kill -9) finds every resource, version, placement and replica address as it left them."""

import json
import sqlite3
from pathlib import Path


class Store:
    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "scheduler.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (kind TEXT, name TEXT, body TEXT, "
                        "PRIMARY KEY (kind, name))")

    def put(self, kind: str, name: str, doc: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)",
                        (kind, name, json.dumps(doc, sort_keys=True)))

    def delete(self, kind: str, name: str) -> None:
        self.db.execute("DELETE FROM docs WHERE kind = ? AND name = ?", (kind, name))

    def all(self, kind: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT name, body FROM docs WHERE kind = ?", (kind,))
        return {name: json.loads(body) for name, body in rows}

    def close(self) -> None:
        self.db.close()
