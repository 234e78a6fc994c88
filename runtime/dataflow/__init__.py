"""Pipelines on Kafka: the engine (moves data between steps), the model gateway (calls models)
and the pipeline gateway (synchronous REST/gRPC in front of the pipeline topics).

Each of the three is a `service.Role` on one skeleton (service.py: settings, logs, scheduler
link, /metrics, tasks, orderly SIGTERM); the engine and the model gateway read their topics
through reader.py (partitions, at-least-once offsets, topic recovery). What is the service's
own: engine.py + flow.py/plan.py/refs.py (joins, triggers, routing), modelgateway.py +
batching.py (model calls through Envoy), pipelinegateway.py (REST/gRPC, waiting for the
answer's key)."""
