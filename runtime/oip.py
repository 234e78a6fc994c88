"""Open Inference Protocol codec: the REST/JSON form (what the pipeline topics carry and the
CLI prints) <-> gRPC messages (runtime.pb.grpc_service_pb2), both directions, for every OIP
datatype. Checked against MLServer's own converters (tests/test_oip_codec.py).

FP16 has no typed field in the protocol's InferTensorContents: it travels only as raw bytes,
so a message holding an FP16 tensor is written with raw contents for every tensor (the
protocol allows raw contents for all tensors or for none).

Note: tritonclient and MLServer ship their own `inference` protobuf package; importing either
and this module in one process clashes in the protobuf registry (the tests run them in a
subprocess)."""

import json
from math import prod
from typing import Any

import numpy as np

from runtime.pb import grpc_service_pb2 as oip

# datatype -> (typed InferTensorContents field or None, numpy dtype of its raw bytes or None).
# BYTES raw contents are elements each prefixed by a 4-byte little-endian length.
TYPES: dict[str, tuple[str | None, type | None]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int8), "INT16": ("int_contents", np.int16),
    "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint8), "UINT16": ("uint_contents", np.uint16),
    "UINT32": ("uint_contents", np.uint32), "UINT64": ("uint64_contents", np.uint64),
    "FP16": (None, np.float16), "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64), "BYTES": ("bytes_contents", None),
}
# which JSON values each kind of numpy dtype takes (bool is an int in Python: 0/1 and
# true/false are both accepted for BOOL, as JSON encoders differ)
_ACCEPTS = {"b": (bool, int), "i": (int,), "u": (int,), "f": (int, float)}
# the kinds of numpy array a JSON list may read as, for each kind of datatype
_FITS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}

Tensor = oip.ModelInferRequest.InferInputTensor | oip.ModelInferResponse.InferOutputTensor


class TensorError(ValueError):
    """A tensor that cannot be converted; the message names it and the reason."""


# ---- protobuf -> JSON -------------------------------------------------------------------

def _unpack_bytes(raw: bytes, where: str) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i:i + 4], "little")
        if i + 4 + n > len(raw):
            raise TensorError(f"{where}: raw BYTES contents end inside an element")
        out.append(raw[i + 4:i + 4 + n])
        i += 4 + n
    return out


def _raw_to_list(raw: bytes, datatype: str, where: str) -> list:
    dtype = TYPES[datatype][1]
    if dtype is None:
        return _unpack_bytes(raw, where)
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise TensorError(f"{where}: {len(raw)} raw bytes do not divide into {datatype} "
                          f"elements of {size} bytes")
    return np.frombuffer(raw, dtype=dtype).tolist()


def _tensor_to_json(t: Tensor, raw: bytes | None, where: str) -> dict:
    if t.datatype not in TYPES:
        raise TensorError(f"{where}.datatype: {t.datatype!r} is not an OIP datatype")
    field = TYPES[t.datatype][0]
    if raw is not None:
        data = _raw_to_list(raw, t.datatype, where)
    else:
        data = list(getattr(t.contents, field)) if field else []
    if len(data) != prod(t.shape):
        hint = " (FP16 travels only as raw contents)" if field is None else ""
        raise TensorError(f"{where}: shape {list(t.shape)} holds {prod(t.shape)} elements, "
                          f"the contents have {len(data)}{hint}")
    if t.datatype == "BYTES":
        data = [b.decode(errors="replace") for b in data]
    tensor: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape),
                              "data": data}
    if t.parameters:
        tensor["parameters"] = _params(t.parameters)
    return tensor


def _tensors_to_json(tensors, raw_contents, what: str) -> list[dict]:
    if raw_contents and len(raw_contents) != len(tensors):
        raise TensorError(f"raw_{what}_contents: {len(raw_contents)} entries for "
                          f"{len(tensors)} {what}s (one per {what} is required)")
    return [_tensor_to_json(t, raw_contents[i] if raw_contents else None,
                            f"{what}s[{i}] ({t.name!r})") for i, t in enumerate(tensors)]


def _params(params) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in params.items()
            if v.WhichOneof("parameter_choice")}


# ---- JSON -> protobuf -------------------------------------------------------------------

def _flat(data: Any) -> list:
    if not isinstance(data, list | tuple):
        return [data]
    if not data or not isinstance(data[0], list | tuple):  # flat (a list inside is refused
        return data if isinstance(data, list) else list(data)  # later as a bad value)
    return [x for item in data for x in _flat(item)]


def _bytes_values(data: list, where: str) -> list[bytes]:
    for d in data:
        if not isinstance(d, str | bytes):
            raise TensorError(f"{where}.data: BYTES elements must be strings, got {d!r}")
    return [d.encode() if isinstance(d, str) else d for d in data]


def _numeric_values(data: list, datatype: str, where: str) -> np.ndarray:
    """`data` as an array of `datatype`; a value that is not of it is refused by name."""
    dtype: np.dtype = np.dtype(TYPES[datatype][1])
    try:
        read = np.asarray(data) if data else np.zeros(0, dtype)
    except ValueError:  # a list among the values
        read = np.asarray(data, dtype=object)
    # numpy's reading decides in C whether the values can be this datatype; only when it
    # cannot tell (mixed types, strings, None, 0/1 for BOOL) are they looked at one by one
    if read.dtype.kind not in _FITS[dtype.kind]:
        accepts = _ACCEPTS[dtype.kind]
        for d in data:
            if not isinstance(d, accepts) or (dtype.kind == "b" and d not in (0, 1)):
                raise TensorError(f"{where}.data: {d!r} is not a {datatype} value")
        read = np.asarray(data, dtype=object)  # as they are (int64 with uint64 reads as float)
    if dtype.kind in "iu" and read.size:
        limits = np.iinfo(dtype)
        if read.min() < limits.min or read.max() > limits.max:
            raise TensorError(f"{where}.data: a value is out of range for {datatype}")
    return read.astype(dtype)


def _pack(values: list[bytes] | np.ndarray) -> bytes:
    if isinstance(values, np.ndarray):
        return values.tobytes()
    return b"".join(len(b).to_bytes(4, "little") + b for b in values)


def _add_tensor(added, t: Any, where: str, raw_list) -> None:
    """Add one JSON tensor to `added` (a request's inputs or a response's outputs); its data
    goes to `raw_list` when given, else into the typed contents."""
    if not isinstance(t, dict) or not isinstance(t.get("name"), str):
        raise TensorError(f"{where}.name: a tensor with a name is required")
    where = f"{where} ({t['name']!r})"
    datatype, shape = t.get("datatype"), t.get("shape")
    if datatype not in TYPES:
        raise TensorError(f"{where}.datatype: {datatype!r} is not an OIP datatype "
                          f"({', '.join(TYPES)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise TensorError(f"{where}.shape: a list of non-negative integers is required")
    try:
        data = _flat(t.get("data", []))
    except RecursionError:
        raise TensorError(f"{where}.data: nested too deeply") from None
    if len(data) != prod(shape):
        raise TensorError(f"{where}: shape {shape} holds {prod(shape)} elements, "
                          f"data has {len(data)}")
    values = (_bytes_values(data, where) if datatype == "BYTES"
              else _numeric_values(data, datatype, where))
    out = added.add(name=t["name"], datatype=datatype, shape=shape)
    _set_params(out.parameters, t.get("parameters"))
    if raw_list is not None:
        raw_list.append(_pack(values))
        return
    field = TYPES[datatype][0]
    assert field is not None  # raw_list is set whenever a tensor is FP16
    if isinstance(values, np.ndarray):  # the checked values, as Python numbers
        values = values.tolist()
    getattr(out.contents, field).extend(values)


def _set_params(target, params: Any) -> None:
    for key, value in (params if isinstance(params, dict) else {}).items():
        p = target[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        elif isinstance(value, str):
            p.string_param = value
        else:  # lists and objects have no parameter type of their own
            p.string_param = json.dumps(value)


def _tensor_list(doc: Any, key: str, required: bool) -> list:
    tensors = doc.get(key) if isinstance(doc, dict) else None
    if tensors is None and not required and isinstance(doc, dict):
        return []
    if not isinstance(tensors, list):
        raise TensorError(f"{key}: a list of tensors is required")
    return tensors


def _needs_raw(tensors: list) -> bool:
    return any(isinstance(t, dict) and t.get("datatype") == "FP16" for t in tensors)


# ---- the four directions ----------------------------------------------------------------

def request_to_json(req: oip.ModelInferRequest) -> dict:
    doc: dict = {"inputs": _tensors_to_json(req.inputs, req.raw_input_contents, "input")}
    if req.id:
        doc["id"] = req.id
    if req.parameters:
        doc["parameters"] = _params(req.parameters)
    return doc


def request_from_json(model: str, doc: dict, raw: bool = False) -> oip.ModelInferRequest:
    """raw: data in raw_input_contents (as tritonclient sends); always so with FP16."""
    tensors = _tensor_list(doc, "inputs", required=True)
    req = oip.ModelInferRequest(model_name=model, id=str(doc.get("id") or ""))
    _set_params(req.parameters, doc.get("parameters"))
    raw_list = req.raw_input_contents if raw or _needs_raw(tensors) else None
    for i, t in enumerate(tensors):
        _add_tensor(req.inputs, t, f"inputs[{i}]", raw_list)
    for i, o in enumerate(_tensor_list(doc, "outputs", required=False)):
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise TensorError(f"outputs[{i}].name: a requested output needs a name")
        req.outputs.add(name=o["name"])
    return req


def response_to_json(resp: oip.ModelInferResponse) -> dict:
    outputs = _tensors_to_json(resp.outputs, resp.raw_output_contents, "output")
    doc: dict[str, Any] = {"model_name": resp.model_name, "id": resp.id, "outputs": outputs}
    if resp.model_version:
        doc["model_version"] = resp.model_version
    if resp.parameters:
        doc["parameters"] = _params(resp.parameters)
    return doc


def response_from_json(doc: dict, raw: bool = False) -> oip.ModelInferResponse:
    """raw: answer in raw_output_contents, as Triton does (and tritonclient expects) when
    the request came with raw_input_contents; always so with FP16."""
    tensors = _tensor_list(doc, "outputs", required=False)
    resp = oip.ModelInferResponse(model_name=str(doc.get("model_name") or ""),
                                  model_version=str(doc.get("model_version") or ""),
                                  id=str(doc.get("id") or ""))
    _set_params(resp.parameters, doc.get("parameters"))
    raw_list = resp.raw_output_contents if raw or _needs_raw(tensors) else None
    for i, t in enumerate(tensors):
        _add_tensor(resp.outputs, t, f"outputs[{i}]", raw_list)
    return resp
