"""What a dataflow service checks before it acts on a request or record: an Open Inference
Protocol request body and its tensors. Every refusal is an `InvalidInput` whose message names
the field and the reason, so it can be sent back as a 400 or to the errors topic as is.

The checks are O(number of tensors) for flat `data` lists (the usual form); only nested `data`
is walked to count its elements."""

import json
from math import prod

from runtime.oip import TYPES

MAX_TENSORS = 1024
MAX_NAME = 256
MAX_DIMS = 16
MAX_PARAM_DEPTH = 32


class InvalidInput(ValueError):
    """A request or record that cannot be processed; the message names field and reason."""


def _count(data, depth: int = 0) -> int:
    """Elements of a (possibly nested) data list; raises InvalidInput when not rectangular
    enough to count (a non-list where a list was started is counted as one element)."""
    if not isinstance(data, list):
        return 1
    if not data or not isinstance(data[0], list):
        return len(data)
    if depth > MAX_DIMS:
        raise InvalidInput(f"data is nested deeper than {MAX_DIMS} levels")
    return sum(_count(d, depth + 1) for d in data)


def _depth(value, limit: int) -> bool:
    """True if `value` nests no deeper than `limit` (parameters are passed on as they are;
    a deep one would cost every later hop a deep parse)."""
    stack = [(value, 0)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
    return True


def _check_params(params, where: str) -> None:
    if params is None:
        return
    if not isinstance(params, dict):
        raise InvalidInput(f"{where}: an object is required")
    if not _depth(params, MAX_PARAM_DEPTH):
        raise InvalidInput(f"{where}: nested deeper than {MAX_PARAM_DEPTH} levels")


def check_tensor(t, where: str, strict: bool = True) -> None:
    """One OIP tensor, as a JSON object. strict (requests): `data` is required and must fill
    `shape`; otherwise (what models answered) only the structure the engine uses is checked."""
    if not isinstance(t, dict):
        raise InvalidInput(f"{where}: expected a tensor object, got {type(t).__name__}")
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: a non-empty string is required")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"{where}.name: longer than {MAX_NAME} characters")
    where = f"{where} ({name!r})"
    datatype = t.get("datatype")
    if not isinstance(datatype, str) or datatype not in TYPES:
        raise InvalidInput(f"{where}.datatype: {datatype!r} is not an OIP datatype "
                           f"({', '.join(TYPES)})")
    shape = t.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise InvalidInput(f"{where}.shape: a list of at most {MAX_DIMS} non-negative "
                           "integers is required")
    _check_params(t.get("parameters"), f"{where}.parameters")
    if not strict:
        return
    if "data" not in t:
        raise InvalidInput(f"{where}.data: missing")
    data = t["data"]
    if isinstance(data, dict):
        raise InvalidInput(f"{where}.data: a list (or a single value) is required")
    size = _count(data)
    if size != prod(shape):
        raise InvalidInput(f"{where}.data: {size} elements do not fill shape {shape} "
                           f"({prod(shape)} elements)")


def check_tensors(tensors, where: str, strict: bool = True) -> list[dict]:
    if not isinstance(tensors, list):
        raise InvalidInput(f"{where}: a list of tensors is required")
    if len(tensors) > MAX_TENSORS:
        raise InvalidInput(f"{where}: more than {MAX_TENSORS} tensors")
    names = set()
    for i, t in enumerate(tensors):
        check_tensor(t, f"{where}[{i}]", strict)
        if t["name"] in names:
            raise InvalidInput(f"{where}[{i}].name: {t['name']!r} appears twice")
        names.add(t["name"])
    return tensors


def parse_request(body: bytes) -> dict:
    """A request body as the pipeline gateway takes it, checked (check_request)."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise InvalidInput("body: JSON nested too deeply") from None
    except ValueError as e:  # includes UnicodeDecodeError
        raise InvalidInput(f"body: not valid JSON ({e})") from None
    return check_request(doc)


def check_request(doc) -> dict:
    """An InferenceRequest as the pipeline gateway takes it: at least one input tensor."""
    if not isinstance(doc, dict):
        raise InvalidInput("body: expected a JSON object with an 'inputs' list "
                           "(Open Inference Protocol InferenceRequest)")
    if "inputs" not in doc:
        raise InvalidInput("inputs: missing (an InferenceRequest needs an 'inputs' list)")
    check_tensors(doc["inputs"], "inputs")
    if not doc["inputs"]:
        raise InvalidInput("inputs: at least one tensor is required")
    _check_params(doc.get("parameters"), "parameters")
    outputs = doc.get("outputs")
    if outputs is not None and (not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)):
        raise InvalidInput("outputs: a list of objects with a 'name' string is required")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInput("id: a string is required")
    return doc
