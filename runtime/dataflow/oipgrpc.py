"""Open Inference Protocol gRPC messages <-> the JSON form the pipeline topics carry."""

import numpy as np

from runtime.pb import grpc_service_pb2 as oip

# datatype -> (InferTensorContents field, numpy dtype of raw_*_contents)
_TYPES = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int8), "INT16": ("int_contents", np.int16),
    "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint8), "UINT16": ("uint_contents", np.uint16),
    "UINT32": ("uint_contents", np.uint32), "UINT64": ("uint64_contents", np.uint64),
    "FP16": ("fp32_contents", np.float16), "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64), "BYTES": ("bytes_contents", None),
}


class TensorError(ValueError):
    pass


def _raw_to_list(raw: bytes, datatype: str) -> list:
    field, dtype = _TYPES[datatype]
    if dtype is None:  # BYTES: 4-byte little-endian length prefix per element
        out, i = [], 0
        while i < len(raw):
            n = int.from_bytes(raw[i:i + 4], "little")
            out.append(raw[i + 4:i + 4 + n].decode(errors="replace"))
            i += 4 + n
        return out
    return np.frombuffer(raw, dtype=dtype).tolist()


def _params(params) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in params.items()
            if v.WhichOneof("parameter_choice")}


def request_to_json(req: oip.ModelInferRequest) -> dict:
    inputs = []
    for i, t in enumerate(req.inputs):
        if t.datatype not in _TYPES:
            raise TensorError(f"inputs[{i}].datatype: {t.datatype!r} is not an OIP datatype")
        if req.raw_input_contents:
            if i >= len(req.raw_input_contents):
                raise TensorError(f"inputs[{i}]: no raw_input_contents for {t.name!r}")
            data = _raw_to_list(req.raw_input_contents[i], t.datatype)
        else:
            data = list(getattr(t.contents, _TYPES[t.datatype][0]))
            if t.datatype == "BYTES":
                data = [b.decode(errors="replace") for b in data]
        tensor = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": data}
        if t.parameters:
            tensor["parameters"] = _params(t.parameters)
        inputs.append(tensor)
    doc: dict = {"inputs": inputs}
    if req.id:
        doc["id"] = req.id
    if req.parameters:
        doc["parameters"] = _params(req.parameters)
    return doc


def _flat(data) -> list:
    return np.asarray(data, dtype=object).ravel().tolist() if isinstance(data, list) else [data]


def _to_raw(data: list, datatype: str) -> bytes:
    dtype = _TYPES.get(datatype, ("", None))[1]
    if dtype is None:
        items = [d.encode() if isinstance(d, str) else bytes(d) for d in data]
        return b"".join(len(b).to_bytes(4, "little") + b for b in items)
    return np.asarray(data, dtype=dtype).tobytes()


def response_from_json(doc: dict, raw: bool = False) -> oip.ModelInferResponse:
    """raw: answer in raw_output_contents, as Triton does (and tritonclient expects) when
    the request came with raw_input_contents."""
    resp = oip.ModelInferResponse(model_name=doc.get("model_name", ""),
                                  model_version=str(doc.get("model_version") or ""),
                                  id=doc.get("id", ""))
    for t in doc.get("outputs") or []:
        datatype = t.get("datatype", "")
        out = resp.outputs.add(name=t.get("name", ""), datatype=datatype,
                               shape=[int(x) for x in t.get("shape") or []])
        field = _TYPES.get(datatype, ("bytes_contents", None))[0]
        data = _flat(t.get("data", []))
        if raw:
            resp.raw_output_contents.append(_to_raw(data, datatype))
            continue
        if field == "bytes_contents":
            data = [d.encode() if isinstance(d, str) else bytes(d) for d in data]
        getattr(out.contents, field).extend(data)
    return resp
