"""Pulumi components that provision core2 on Kubernetes and manage its resources."""

from components.kafka import Kafka, KafkaArgs
from components.platform import Platform, PlatformArgs
from components.resources import Experiment, Model, Pipeline
from components.scheduler_api import Connection
from components.server import Server, ServerArgs

__all__ = [
           "Connection",
           "Experiment",
           "Kafka",
           "KafkaArgs",
           "Model",
           "Pipeline",
           "Platform",
           "PlatformArgs",
           "Server",
           "ServerArgs",
]
