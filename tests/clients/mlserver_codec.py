"""MLServer's own OIP converters, as the reference the codec is tested against (in a process of
its own: MLServer's `inference` protobuf package clashes with core2's in one process).

Reads JSON cases on stdin: [{"kind": "request"|"response", "doc": OIP JSON, "raw": bool,
"ours": base64 of core2's protobuf for doc}]; prints for each {"pb": base64 of MLServer's
protobuf for doc, "json": MLServer's reading of core2's protobuf}."""

import base64
import json
import sys

from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
from mlserver.types import InferenceRequest, InferenceResponse

KINDS = {"request": (InferenceRequest, ModelInferRequestConverter, pb.ModelInferRequest),
         "response": (InferenceResponse, ModelInferResponseConverter, pb.ModelInferResponse)}


def _texts(value):
    """MLServer's types hold BYTES as bytes; JSON holds them as text."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_texts(v) for v in value]
    if isinstance(value, dict):
        return {k: _texts(v) for k, v in value.items()}
    return value


def _as_bytes(doc: dict) -> dict:
    """BYTES data as bytes, as MLServer's StringCodec encodes it (its typed converter takes
    bytes only)."""
    tensors = [{**t, "data": [d.encode() for d in t["data"]]} if t["datatype"] == "BYTES"
               else t for t in doc.get("inputs", doc.get("outputs", []))]
    return {**doc, ("inputs" if "inputs" in doc else "outputs"): tensors}


def convert(case: dict) -> dict:
    types, converter, message = KINDS[case["kind"]]
    doc = types.model_validate(_as_bytes(case["doc"]))
    if case["kind"] == "request":
        theirs = converter.from_types(doc, model_name="m", use_raw=case["raw"])
    else:
        theirs = converter.from_types(doc, use_raw=case["raw"])
    ours = converter.to_types(message.FromString(base64.b64decode(case["ours"])))
    return {"pb": base64.b64encode(theirs.SerializeToString()).decode(),
            "json": _texts(ours.model_dump(exclude_none=True))}


print(json.dumps([convert(c) for c in json.load(sys.stdin)]))
