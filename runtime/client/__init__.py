"""The one scheduler client (CLI, Pulumi providers, controller, dataflow services).

    from runtime.client import SchedulerClient, SchedulerError

    c = SchedulerClient("127.0.0.1:9004")
    c.apply("Model", "iris", spec_json)
    c.wait("Model", "iris", timeout=120, progress=print)    # on the WatchStatus stream

Errors follow the gRPC status code (errors.py): NotFound, Refused (`invalid`: a bad spec or
one no server can run), Unavailable (not reachable, or too slow); a wait raises Failed with the
scheduler's reason or TimedOut. All are SchedulerError. Kinds and states: runtime.kinds.
"""

from runtime.client.errors import (
    Failed,
    NotFound,
    Refused,
    SchedulerError,
    TimedOut,
    Unavailable,
)
from runtime.client.scheduler import SchedulerClient, autoscaled_replicas

__all__ = ["Failed", "NotFound", "Refused", "SchedulerClient", "SchedulerError", "TimedOut",
           "Unavailable", "autoscaled_replicas"]
