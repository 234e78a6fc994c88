"""Pydantic specs mirroring Seldon's mlops.seldon.io/v1alpha1 kinds, and manifest loading."""

from runtime.specs.common import SpecError, parse_quantity
from runtime.specs.experiment import ExperimentSpec
from runtime.specs.model import ModelSpec
from runtime.specs.server import ServerSpec

__all__ = ["ExperimentSpec", "ModelSpec", "ServerSpec", "SpecError", "parse_quantity"]
