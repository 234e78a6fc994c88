"""The one scheduler client (CLI, Pulumi providers, controller, dataflow services).

    from runtime.client import SchedulerClient, SchedulerError
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
from runtime.kinds import FAILED, GONE, Kind

# Old names, kept until their users outside this package move to runtime.kinds (issue 13).
KIND = {k.value: k.pb for k in Kind}
FAILED_STATES = FAILED | {"ScheduleFailed"}
GONE_STATES = GONE

__all__ = ["FAILED_STATES", "GONE_STATES", "KIND", "Failed", "NotFound", "Refused",
           "SchedulerClient", "SchedulerError", "TimedOut", "Unavailable",
           "autoscaled_replicas"]
