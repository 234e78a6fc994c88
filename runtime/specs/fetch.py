"""Fetch rules of a Server (core2's `fetch` field): which `storageUri`s its agents may fetch.

Defaults refuse loopback, link-local and cloud-metadata addresses and cap an artifact at
10 GiB; `localRoots` left unset admits any local path (a bare agent), while the local platform
always sets it (samples, the folders of applied manifests, and these)."""

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from pydantic import Field, field_validator

from runtime.specs.common import Spec, parse_quantity

SCHEMES = ["file", "http", "https", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"]


class FetchRules(Spec):
    allowedSchemes: list[str] = Field(default_factory=lambda: list(SCHEMES))
    # local paths must resolve (symbolic links followed) under one of these; None: anywhere
    localRoots: list[Path] | None = None
    # addresses otherwise refused (loopback, link-local, metadata) that this server may use
    allowedNetworks: list[IPv4Network | IPv6Network] = []
    maxBytes: str | int = "10Gi"

    @field_validator("allowedSchemes")
    @classmethod
    def _schemes(cls, v: list[str]) -> list[str]:
        return [s.lower() for s in v]

    @field_validator("maxBytes")
    @classmethod
    def _max(cls, v):
        if parse_quantity(v) <= 0:
            raise ValueError("must be positive")
        return v

    @property
    def max_bytes(self) -> int:
        return parse_quantity(self.maxBytes)
