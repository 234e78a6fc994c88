"""Open Inference Protocol codec: the REST/JSON form (what the pipeline topics carry and the
CLI prints) <-> gRPC messages (runtime.pb.grpc_service_pb2), both directions.

Note: tritonclient ships its own `inference` protobuf package; importing it and this module in
one process clashes in the protobuf registry (the tests run tritonclient in a subprocess)."""

import numpy as np

from runtime.pb import grpc_service_pb2 as oip

# datatype -> (InferTensorContents field, numpy dtype of raw_*_contents)
TYPES = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int8), "INT16": ("int_contents", np.int16),
    "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint8), "UINT16": ("uint_contents", np.uint16),
    "UINT32": ("uint_contents", np.uint32), "UINT64": ("uint64_contents", np.uint64),
    "FP16": ("fp32_contents", np.float16), "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64), "BYTES": ("bytes_contents", None),
}


class TensorError(ValueError):
    """A tensor that cannot be converted; the message names it."""


def _raw_to_list(raw: bytes, datatype: str) -> list:
    dtype = TYPES[datatype][1]
    if dtype is None:  # BYTES: 4-byte little-endian length prefix per element
        out, i = [], 0
        while i < len(raw):
            n = int.from_bytes(raw[i:i + 4], "little")
            out.append(raw[i + 4:i + 4 + n].decode(errors="replace"))
            i += 4 + n
        return out
    return np.frombuffer(raw, dtype=dtype).tolist()


def _to_raw(data: list, datatype: str) -> bytes:
    dtype = TYPES.get(datatype, ("", None))[1]
    if dtype is None:
        items = [d.encode() if isinstance(d, str) else bytes(d) for d in data]
        return b"".join(len(b).to_bytes(4, "little") + b for b in items)
    return np.asarray(data, dtype=dtype).tobytes()


def _flat(data) -> list:
    return np.asarray(data, dtype=object).ravel().tolist() if isinstance(data, list) else [data]


def _params(params) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in params.items()
            if v.WhichOneof("parameter_choice")}


def _set_params(target, params: dict | None) -> None:
    for key, value in (params or {}).items():
        p = target[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = str(value)


def _tensors_to_json(tensors, raw_contents) -> list[dict]:
    out = []
    for i, t in enumerate(tensors):
        if t.datatype not in TYPES:
            raise TensorError(f"[{i}].datatype: {t.datatype!r} is not an OIP datatype")
        if raw_contents:
            if i >= len(raw_contents):
                raise TensorError(f"[{i}]: no raw contents for {t.name!r}")
            data = _raw_to_list(raw_contents[i], t.datatype)
        else:
            data = list(getattr(t.contents, TYPES[t.datatype][0]))
            if t.datatype == "BYTES":
                data = [b.decode(errors="replace") for b in data]
        tensor = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": data}
        if t.parameters:
            tensor["parameters"] = _params(t.parameters)
        out.append(tensor)
    return out


def _fill(message, tensors: list[dict], raw: bool, where: str) -> None:
    """Add JSON tensors to a request's inputs or a response's outputs."""
    is_request = isinstance(message, oip.ModelInferRequest)
    added = message.inputs if is_request else message.outputs
    raw_list = None
    if raw:
        raw_list = message.raw_input_contents if is_request else message.raw_output_contents
    for i, t in enumerate(tensors):
        try:
            datatype = t["datatype"]
            field = TYPES[datatype][0]
            out = added.add(name=t["name"], datatype=datatype,
                            shape=[int(x) for x in t["shape"]])
        except (KeyError, TypeError, ValueError):
            raise TensorError(f"{where}[{i}]: name, shape and a known datatype are required") \
                from None
        _set_params(out.parameters, t.get("parameters"))
        data = _flat(t.get("data", []))
        if raw_list is not None:
            raw_list.append(_to_raw(data, datatype))
            continue
        if field == "bytes_contents":
            data = [d.encode() if isinstance(d, str) else bytes(d) for d in data]
        getattr(out.contents, field).extend(data)


def request_to_json(req: oip.ModelInferRequest) -> dict:
    try:
        doc: dict = {"inputs": _tensors_to_json(req.inputs, req.raw_input_contents)}
    except TensorError as e:
        raise TensorError(f"inputs{e}") from None
    if req.id:
        doc["id"] = req.id
    if req.parameters:
        doc["parameters"] = _params(req.parameters)
    return doc


def request_from_json(model: str, doc: dict) -> oip.ModelInferRequest:
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise TensorError("inputs: a list of tensors is required")
    req = oip.ModelInferRequest(model_name=model, id=str(doc.get("id") or ""))
    _set_params(req.parameters, doc.get("parameters"))
    _fill(req, doc["inputs"], raw=False, where="inputs")
    for o in doc.get("outputs") or []:
        req.outputs.add(name=o["name"])
    return req


def response_to_json(resp: oip.ModelInferResponse) -> dict:
    doc = {"model_name": resp.model_name, "id": resp.id,
           "outputs": _tensors_to_json(resp.outputs, resp.raw_output_contents)}
    if resp.model_version:
        doc["model_version"] = resp.model_version
    if resp.parameters:
        doc["parameters"] = _params(resp.parameters)
    return doc


def response_from_json(doc: dict, raw: bool = False) -> oip.ModelInferResponse:
    """raw: answer in raw_output_contents, as Triton does (and tritonclient expects) when
    the request came with raw_input_contents."""
    resp = oip.ModelInferResponse(model_name=doc.get("model_name", ""),
                                  model_version=str(doc.get("model_version") or ""),
                                  id=doc.get("id", ""))
    _fill(resp, doc.get("outputs") or [], raw=raw, where="outputs")
    return resp
