"""MLServer's logging in core2's one format (runtime.logs), without the agent's polling.

MLServer logs every HTTP request (uvicorn's access log: its `debug` setting, on by default),
and the agent asks the server every 2 s for what it holds, how it is used and its metrics:
left alone, ~90 % of the server's log is those requests. They are logged at DEBUG
(CORE2_LOG_LEVEL=DEBUG shows them); inference requests, repository loads and unloads, and
MLServer's own messages stay at INFO."""

import logging
from typing import Any

from runtime.logs import Formatter

# (method, path) of the requests the agent and the supervisor repeat while idle
POLLING = {("GET", "/metrics"), ("GET", "/v2/health/ready"), ("GET", "/v2/health/live"),
           ("GET", "/v2/ready"), ("GET", "/v2/live"), ("GET", "/core2/usage"),
           ("POST", "/v2/repository/index")}


class PollingToDebug(logging.Filter):
    """On uvicorn's access logger: a polling request becomes a DEBUG record, kept only when
    the log level admits DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn.access's arguments: client address, method, path with query, version, status
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) < 3 or (args[1], str(args[2]).split("?", 1)[0]) not in POLLING:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def logging_config(service: str, level: str) -> dict[str, Any]:
    """A logging.config.dictConfig for MLServer's `logging_settings` (MLServer applies it,
    in its worker processes too, and gives it to uvicorn as `log_config`): one stderr handler
    in core2's format (runtime.logs) at the root; MLServer's and uvicorn's own handlers
    removed, so their records reach it."""
    loggers: dict[str, dict[str, Any]] = {
        name: {"handlers": [], "propagate": True, "level": "NOTSET"}
        for name in ("mlserver", "uvicorn", "uvicorn.error", "uvicorn.access")}
    loggers["uvicorn.access"]["filters"] = ["polling"]
    return {
        "version": 1,
        "disable_existing_loggers": False,  # core2's loggers in the same process
        "formatters": {"core2": {"()": Formatter, "service": service}},
        "filters": {"polling": {"()": PollingToDebug}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "core2",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": loggers,
    }
