"""One log format for every core2 service:

    2026-11-30T19:55:01.123Z scheduler INFO model iris available replicas=2

timestamp (UTC), service, level, message, then `key=value` for each field passed as
`log.info("...", extra={"model": "iris"})`. `CORE2_LOG_LEVEL` sets the level (INFO)."""

import logging
import os
import sys
import time
from typing import TextIO

# a record's own attributes, not fields to print (uvicorn adds color_message, the message
# again with terminal colours)
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


def _value(v: object) -> str:
    text = str(v)
    return repr(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


class Formatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = " ".join(f"{k}={_value(v)}" for k, v in vars(record).items()
                          if k not in _RECORD_FIELDS)
        line = (f"{stamp}.{int(record.msecs):03d}Z {self.service} {record.levelname} "
                f"{record.getMessage()}")
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(service: str, level: str | None = None, stream: TextIO | None = None) -> None:
    """Route every logger of this process through one handler in the common format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(Formatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("CORE2_LOG_LEVEL") or "INFO").upper())
