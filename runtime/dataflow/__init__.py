"""Pipelines on Kafka: the engine (moves data between steps), the model gateway (calls models)
and the pipeline gateway (synchronous REST/gRPC in front of the pipeline topics)."""
