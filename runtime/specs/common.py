"""Shared pieces of the specs: Kubernetes quantities and readable validation errors."""

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

NAME = re.compile(r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")


class SpecError(ValueError):
    """A spec was refused; the message names the field and the reason."""


def parse_quantity(value: str | int | float) -> int:
    """Kubernetes quantity ("100Mi", "1G", "512", "1.5Gi") to a whole number of bytes,
    rounded up as Kubernetes rounds memory. Raises SpecError (a ValueError, so a pydantic
    validator names the field) for anything else, negative amounts included."""
    # imported here: the kubernetes package costs ~0.25 s to import, paid only by the
    # processes that read a quantity, not by every one that imports the specs
    from kubernetes.utils.quantity import parse_quantity as kubernetes_quantity

    try:
        amount = kubernetes_quantity(value)
    except (ValueError, TypeError):
        amount = None
    if isinstance(value, bool) or amount is None or not amount.is_finite():
        raise SpecError(f"{value!r} is not a Kubernetes quantity such as 100Mi or 1G")
    if amount < 0:
        raise SpecError(f"{value!r} is negative")
    return math.ceil(amount)


class Spec(BaseModel):
    """Base for every spec: unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def parse(cls, data: Any, where: str = "spec"):
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            raise SpecError(describe(e, where)) from None


def is_empty(value: Any) -> bool:
    """What a manifest writes for a field left at its default: null, false, 0, "", or a
    mapping of only such values (`dataflow: {cleanTopicsOnDelete: false}`)."""
    if isinstance(value, dict):
        return all(is_empty(v) for v in value.values())
    return not value


def refuse_unless_empty(value: Any, info: ValidationInfo, reasons: dict[str, str]) -> Any:
    """For Seldon fields core2 does not act on: left at its default the field loads (so a
    Seldon manifest loads unchanged); any other value is refused with the field's reason,
    rather than accepted and ignored."""
    if not is_empty(value):
        raise ValueError(reasons[info.field_name or ""])
    return value


def refusing(reasons: dict[str, str], *fields: str) -> Any:
    """A spec class's validator applying refuse_unless_empty to `fields` (default: every field
    `reasons` names): `_unsupported = refusing(UNSUPPORTED)`."""
    def check(cls: type, value: Any, info: ValidationInfo) -> Any:
        return refuse_unless_empty(value, info, reasons)
    return field_validator(*(fields or tuple(reasons)))(check)


def quantity(field: str) -> Any:
    """A spec class's validator: `field` (None allowed) must be a Kubernetes quantity."""
    def check(cls: type, value: Any) -> Any:
        if value is not None:
            parse_quantity(value)
        return value
    return field_validator(field)(check)


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
