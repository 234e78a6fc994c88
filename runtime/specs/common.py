"""Shared pieces of the specs: Kubernetes quantities and readable validation errors."""

import re

from pydantic import BaseModel, ConfigDict, ValidationError

_SUFFIXES = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")


class SpecError(ValueError):
    """A spec was refused; the message names the field and the reason."""


def parse_quantity(value: str | int | float) -> int:
    """Kubernetes quantity ("100Mi", "1G", "512") to a whole number of bytes."""
    if isinstance(value, int | float):
        return int(value)
    m = _QUANTITY.match(value.strip())
    if not m or m.group(2) not in _SUFFIXES:
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 100Mi or 1G")
    return int(float(m.group(1)) * _SUFFIXES[m.group(2)])


class Spec(BaseModel):
    """Base for every spec: unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def parse(cls, data: dict, where: str = "spec"):
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            raise SpecError(describe(e, where)) from None


def describe(err: ValidationError, where: str) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join([where, *(str(p) for p in item["loc"])])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def check_name(name: str, what: str = "metadata.name") -> str:
    if not name or len(name) > 63 or not NAME.match(name):
        raise SpecError(
            f"{what}: {name!r} must be 1-63 lower-case letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return name
