"""Pipelines on Kafka: two services. The engine moves data between steps and calls each
step's model itself (its in-process model gateway); the pipeline gateway is the synchronous
REST/gRPC front of the pipeline topics.

Each is a `service.Role` on one skeleton (service.py: settings, logs, scheduler link,
/metrics, tasks, orderly SIGTERM); the engine reads its topics through reader.py
(partitions, at-least-once offsets, topic recovery). What is the service's own: engine.py +
flow.py/plan.py/refs.py (joins, triggers, routing), modelgateway.py + batching.py (model
calls through Envoy), pipelinegateway.py (REST/gRPC, waiting for the answer's key)."""
