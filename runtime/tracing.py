"""OpenTelemetry tracing for core2's Python services, off unless an OTLP endpoint is set.

`OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over gRPC, e.g. `http://127.0.0.1:4317`; the local config's
`tracing.otlpEndpoint` and the Pulumi components' `tracing_endpoint` set it) turns it on: each
service exports its spans there in batches. Off, `start` returns None and nothing is created,
parsed or sent.

The context travels as W3C `traceparent`: in HTTP and gRPC headers (Envoy and MLServer take part
with their own tracers) and in Kafka record headers between the dataflow services, so one
pipeline request is one trace: Envoy -> pipeline gateway -> engine step -> model gateway ->
Envoy -> model server, per step.
"""

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
HEADERS = ("traceparent", "tracestate")
_propagator = TraceContextTextMapPropagator()


class TracingConfig(BaseModel):
    """Config key `tracing` (local config and stack config): where spans go, over OTLP/gRPC."""

    model_config = ConfigDict(extra="forbid")
    otlpEndpoint: str = Field(pattern=r"^(https?://)?[^/:\s]+:\d+$")  # host:port
    samplePercent: float = Field(default=100.0, ge=0, le=100)  # of requests Envoy starts

    @property
    def url(self) -> str:
        e = self.otlpEndpoint
        return e if "://" in e else f"http://{e}"

    def env(self) -> dict[str, str]:
        """For the Python services (the dataflow services, MLServer through core2's hook)."""
        return {ENDPOINT_ENV: self.url}

_tracer: trace.Tracer | None = None


def endpoint() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or None


def init(service: str) -> bool:
    """Set up exporting for this process (once, at start); False when tracing is off."""
    global _tracer
    if _tracer is not None or not endpoint():
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(insecure=True)))
    _tracer = provider.get_tracer("core2")
    return True


def start(name: str, carrier: Mapping[str, str] | None, kind: SpanKind = SpanKind.INTERNAL,
          **attributes) -> Span | None:
    """A span named `name`, child of the context in `carrier` (headers), or None when tracing
    is off. The caller ends it."""
    if _tracer is None:
        return None
    parent = _propagator.extract(carrier) if carrier else None
    return _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)


def carrier(span: Span | None) -> dict[str, str]:
    """The headers that make the next hop a child of `span` ({} without a span)."""
    if span is None:
        return {}
    out: dict[str, str] = {}
    _propagator.inject(out, context=trace.set_span_in_context(span))
    return out


def end(span: Span | None, error: str | None = None) -> None:
    if span is None:
        return
    if error:
        span.set_status(trace.Status(trace.StatusCode.ERROR, error))
    span.end()


def with_carrier(headers: list[tuple[str, str]], span: Span | None) -> list[tuple[str, str]]:
    """Record headers with the trace context replaced by `span`'s (unchanged without one)."""
    if span is None:
        return headers
    return [(k, v) for k, v in headers if k not in HEADERS] + list(carrier(span).items())
