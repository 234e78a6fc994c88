"""Open Inference Protocol codec: REST JSON <-> gRPC messages (runtime.pb.grpc_service_pb2).

Note: tritonclient ships its own `inference` protobuf package; importing both in one process
clashes in the protobuf registry, so this module imports the generated code lazily."""

import struct

CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
RAW_FORMAT = {"BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B",
              "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d"}


class CodecError(ValueError):
    pass


def _flatten(data) -> list:
    if isinstance(data, list):
        out = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


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


def _get_params(params) -> dict:
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in params.items()
            if v.WhichOneof("parameter_choice")}


def request_to_grpc(model: str, body: dict):
    from runtime.pb import grpc_service_pb2 as pb

    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise CodecError("inputs: a list of tensors is required")
    req = pb.ModelInferRequest(model_name=model, id=str(body.get("id") or ""))
    _set_params(req.parameters, body.get("parameters"))
    for i, t in enumerate(body["inputs"]):
        try:
            dtype = t["datatype"]
            field = CONTENTS_FIELD[dtype]
            tensor = req.inputs.add(name=t["name"], datatype=dtype, shape=t["shape"])
        except (KeyError, TypeError):
            raise CodecError(f"inputs[{i}]: name, shape and a known datatype are required") \
                from None
        values = _flatten(t.get("data", []))
        if dtype == "BYTES":
            values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
        getattr(tensor.contents, field).extend(values)
        _set_params(tensor.parameters, t.get("parameters"))
    for o in body.get("outputs") or []:
        req.outputs.add(name=o["name"])
    return req


def response_to_json(resp) -> dict:
    outputs = []
    for i, t in enumerate(resp.outputs):
        if i < len(resp.raw_output_contents):
            raw = resp.raw_output_contents[i]
            if t.datatype == "BYTES":
                values, pos = [], 0
                while pos < len(raw):
                    (n,) = struct.unpack_from("<I", raw, pos)
                    values.append(raw[pos + 4:pos + 4 + n].decode(errors="replace"))
                    pos += 4 + n
            else:
                fmt = RAW_FORMAT[t.datatype]
                values = list(struct.unpack(f"<{len(raw) // struct.calcsize(fmt)}{fmt}", raw))
        else:
            values = list(getattr(t.contents, CONTENTS_FIELD[t.datatype]))
            if t.datatype == "BYTES":
                values = [v.decode(errors="replace") for v in values]
        out = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": values}
        if t.parameters:
            out["parameters"] = _get_params(t.parameters)
        outputs.append(out)
    body = {"model_name": resp.model_name, "id": resp.id, "outputs": outputs}
    if resp.model_version:
        body["model_version"] = resp.model_version
    if resp.parameters:
        body["parameters"] = _get_params(resp.parameters)
    return body
