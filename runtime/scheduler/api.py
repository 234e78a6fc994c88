"""gRPC front of the scheduler: the Scheduler API (CLI, Pulumi, dataflow) and the Agent API."""

import asyncio
import logging

import grpc

from runtime import kinds
from runtime.dataflow.control import COMPONENT_HEADER
from runtime.pb import agent_pb2, agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from runtime.scheduler.core import EVENTS, NotFound, Scheduler
from runtime.scheduler.drain import DrainError, Outcome
from runtime.scheduler.events import ServerChanged
from runtime.scheduler.models import Unsatisfiable
from runtime.scheduler.state import Replica
from runtime.specs import SpecError

log = logging.getLogger(__name__)
DRAIN_DEFAULT_S = 600.0  # a Drain call without a gRPC deadline waits at most this long
DRAIN_ANSWER_MARGIN_S = 1.0  # answer this long before the caller's deadline


async def _guard(context, fn, *args):
    try:
        return fn(*args)
    except SpecError as e:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    except NotFound as e:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
    except Unsatisfiable as e:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    except RecursionError:  # a document the depth checks did not catch
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec: nested too deeply")


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    async def Apply(self, request, context):
        status = await _guard(context, self.s.apply, request.kind, request.name,
                              request.spec_json)
        return scheduler_pb2.ApplyResponse(status=status)

    async def Delete(self, request, context):
        status = await _guard(context, self.s.delete, request.kind, request.name)
        return scheduler_pb2.DeleteResponse(status=status)

    async def Status(self, request, context):
        items = await _guard(context, self.s.status, request.kind, request.name)
        return scheduler_pb2.StatusResponse(items=items)

    async def WatchStatus(self, request, context):
        if request.kind not in EVENTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "kind: must be MODEL, SERVER, PIPELINE or EXPERIMENT")
        q: asyncio.Queue[str] = asyncio.Queue()
        # hears only the watched kind (and name): a model change wakes its own watchers and,
        # through the bus, those of the pipelines and experiments that follow it
        unsubscribe = self.s.bus.subscribe(EVENTS[request.kind],
                                           lambda e: q.put_nowait(e.name), request.name)
        # a dataflow service's reports hold only while its watch stream is open
        component = dict(context.invocation_metadata() or ()).get(COMPONENT_HEADER)
        if component:
            self.s.pipelines.link(component, +1)
        try:
            for item in self.s.status(request.kind, request.name, missing_ok=True):
                yield item
            while True:
                name = await q.get()
                items = self.s.status(request.kind, name, missing_ok=True)
                yield items[0] if items else scheduler_pb2.ResourceStatus(
                    kind=request.kind, name=name, state=kinds.terminated(request.kind))
        finally:
            unsubscribe()
            if component:
                self.s.pipelines.link(component, -1)

    async def ReportPipeline(self, request, context):
        self.s.report_pipeline(request)
        return scheduler_pb2.Empty()


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, scheduler: Scheduler):
        self.s = scheduler

    async def Subscribe(self, request, context):
        replica = Replica(
            server=request.server_name, idx=request.replica_idx,
            capabilities=list(request.capabilities), memory=request.memory_bytes,
            over_commit=request.over_commit_percentage, host=request.host,
            server_http_port=request.server_http_port, server_grpc_port=request.server_grpc_port,
            agent_http_port=request.agent_http_port, agent_grpc_port=request.agent_grpc_port,
            available_memory=request.memory_bytes)
        log.info("agent connected", extra={"replica": replica.key, "loaded": len(request.loaded),
                                           "evicted": len(request.evicted)})
        q = self.s.models.connect(replica, {m.internal_name for m in request.loaded},
                                  {m.internal_name for m in request.evicted})
        self.s.bus.publish(ServerChanged(replica.server))
        try:
            while True:
                yield await q.get()
        finally:
            log.info("agent disconnected", extra={"replica": replica.key})
            self.s.models.disconnect(replica, q)

    async def Event(self, request, context):
        applied = await self.s.models.on_event(request)
        return agent_pb2.EventAck(routes_applied=applied)

    async def ReportLoad(self, request, context):
        self.s.autoscaler.report(request)
        return agent_pb2.LoadAck()

    async def Drain(self, request, context):
        if not request.server_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "server_name: required")
        remaining = context.time_remaining()
        timeout = DRAIN_DEFAULT_S if remaining is None else \
            max(remaining - DRAIN_ANSWER_MARGIN_S, remaining / 2)
        try:
            outcomes = await self.s.models.drainer.drain(request.server_name,
                                                         request.replica_idx, timeout)
        except DrainError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        return agent_pb2.DrainResponse(
            moved=[_drained(o) for o in outcomes if o.moved],
            not_moved=[_drained(o) for o in outcomes if not o.moved])


def _drained(o: Outcome) -> agent_pb2.DrainedModel:
    return agent_pb2.DrainedModel(name=o.model, version=o.version, server=o.server,
                                  replicas=o.replicas, reason=o.reason)
