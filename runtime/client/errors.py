"""The scheduler client's errors, one class per gRPC status code a caller acts on."""

import grpc


class SchedulerError(Exception):
    """The scheduler refused a request, failed a resource, or is unreachable; the message
    says which resource and why. `invalid` is true when the request itself was refused: a
    spec error (INVALID_ARGUMENT) or one no server could ever satisfy (FAILED_PRECONDITION)."""

    def __init__(self, message: str, invalid: bool = False,
                 code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.invalid, self.code = invalid, code


class NotFound(SchedulerError):
    """The scheduler has no resource of that kind and name (NOT_FOUND)."""


class Refused(SchedulerError):
    """The request itself is wrong: a bad spec, or one no server can ever run."""

    def __init__(self, message: str, invalid: bool = True,
                 code: grpc.StatusCode | None = None):
        super().__init__(message, invalid, code)


class Unavailable(SchedulerError):
    """The scheduler did not answer: not running, unreachable, or too slow."""


class Failed(SchedulerError):
    """A wait ended with the resource in a failed state; the message carries its reason."""


class TimedOut(SchedulerError):
    """A wait's deadline passed before the resource reached the state asked for."""


REFUSED_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)


def from_rpc(e: grpc.RpcError, address: str, what: str = "") -> SchedulerError:
    """The error for a failed call to the scheduler at `address` about `what` (e.g.
    "Model iris"; "" when the call named no resource)."""
    code, details = e.code(), e.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"scheduler not reachable at {address} (is `core2 up` running?): "
                           f"{details}", code=code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(f"scheduler at {address} did not answer in time"
                           f"{f' ({what})' if what else ''}", code=code)
    # the scheduler's messages usually name the resource already ("Model iris: spec...")
    message = details if not what or details.startswith(what) else f"{what}: {details}"
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what} not found" if what else details, code=code)
    if code in REFUSED_CODES:
        return Refused(f"{message} ({code.name})", code=code)
    return SchedulerError(message, code=code)
