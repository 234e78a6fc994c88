"""The OIP codec (runtime.oip) agrees with MLServer's own converters for every OIP datatype,
both directions (JSON -> protobuf, protobuf -> JSON), requests and responses, typed and raw
contents; FP16 travels only as raw bytes; bad tensors are refused with a TensorError naming
the tensor and the reason."""

import base64
import json
import subprocess
import sys

import pytest

from runtime.oip import (
    TYPES,
    TensorError,
    request_from_json,
    request_to_json,
    response_from_json,
    response_to_json,
)
from runtime.pb import grpc_service_pb2 as oip
from tests.conftest import ROOT

# values at each datatype's edges, all exactly representable in it
DATA = {
    "BOOL": [True, False, True, True],
    "UINT8": [0, 1, 128, 255], "UINT16": [0, 1, 2**15, 2**16 - 1],
    "UINT32": [0, 1, 2**31, 2**32 - 1], "UINT64": [0, 1, 2**63, 2**64 - 1],
    "INT8": [-128, -1, 0, 127], "INT16": [-(2**15), -1, 0, 2**15 - 1],
    "INT32": [-(2**31), -1, 0, 2**31 - 1], "INT64": [-(2**63), -1, 0, 2**63 - 1],
    "FP16": [-65504.0, -0.5, 0.0009765625, 65504.0],
    "FP32": [-3.5, 0.0, 0.25, 16777216.0], "FP64": [-0.1, 0.0, 1e-300, 1.7976931348623157e308],
    "BYTES": ["hello", "", "wörld", "a b"],
}
# FP16 has no typed field in the protocol: only raw
CASES = [(kind, dt, raw) for kind in ("request", "response") for dt in DATA
         for raw in (False, True) if raw or dt != "FP16"]


def _doc(kind: str, datatype: str) -> dict:
    tensors = [{"name": "t", "datatype": datatype, "shape": [2, 2], "data": DATA[datatype]},
               {"name": "n", "datatype": "INT32", "shape": [1], "data": [7]}]
    if kind == "request":
        return {"id": "r1", "inputs": tensors}
    return {"model_name": "m", "id": "r1", "outputs": tensors}


def _ours(kind: str, doc: dict, raw: bool):
    if kind == "request":
        return request_from_json("m", doc, raw=raw)
    return response_from_json(doc, raw=raw)


def _to_json(kind: str, message) -> dict:
    return request_to_json(message) if kind == "request" else response_to_json(message)


@pytest.fixture(scope="module")
def mlserver():
    """MLServer's answer for every case, from one subprocess."""
    cases = [{"kind": k, "raw": raw, "doc": _doc(k, dt),
              "ours": base64.b64encode(_ours(k, _doc(k, dt), raw).SerializeToString()).decode()}
             for k, dt, raw in CASES]
    out = subprocess.run([sys.executable, "-m", "tests.clients.mlserver_codec"], cwd=ROOT,
                         input=json.dumps(cases), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(zip(CASES, json.loads(out.stdout), strict=True))


def test_every_oip_datatype_is_covered():
    assert set(DATA) == set(TYPES)


def _theirs(mlserver, kind: str, datatype: str, raw: bool):
    message = oip.ModelInferRequest if kind == "request" else oip.ModelInferResponse
    theirs = message.FromString(base64.b64decode(mlserver[kind, datatype, raw]["pb"]))
    for t in theirs.inputs if kind == "request" else theirs.outputs:
        if not t.contents.ListFields():  # MLServer sets an empty `contents` on raw tensors
            t.ClearField("contents")
    return theirs


@pytest.mark.parametrize(("kind", "datatype", "raw"), CASES)
def test_json_to_protobuf_matches_mlserver(mlserver, kind, datatype, raw):
    assert _ours(kind, _doc(kind, datatype), raw) == _theirs(mlserver, kind, datatype, raw)
    # and MLServer reads core2's message back as the JSON it came from
    read = mlserver[kind, datatype, raw]["json"]
    tensors = read["inputs" if kind == "request" else "outputs"]
    assert tensors[0]["data"] == DATA[datatype]
    assert (tensors[0]["shape"], tensors[0]["datatype"]) == ([2, 2], datatype)


@pytest.mark.parametrize(("kind", "datatype", "raw"), CASES)
def test_protobuf_to_json_matches_mlserver(mlserver, kind, datatype, raw):
    assert _to_json(kind, _theirs(mlserver, kind, datatype, raw)) == _doc(kind, datatype)


def test_fp16_is_sent_as_raw_bytes_with_every_other_tensor():
    req = request_from_json("m", _doc("request", "FP16"))
    assert len(req.raw_input_contents) == 2
    assert not req.inputs[0].contents.ListFields() and not req.inputs[1].contents.ListFields()
    assert req.raw_input_contents[0] == b"\xff\xfb\x00\xb8\x00\x14\xff\x7b"  # IEEE half
    resp = response_from_json(_doc("response", "FP16"))
    assert len(resp.raw_output_contents) == 2


def test_nested_data_is_read_in_row_major_order():
    nested = request_from_json("m", {"inputs": [{"name": "x", "datatype": "INT64",
                                                 "shape": [2, 2], "data": [[1, 2], [3, 4]]}]})
    assert list(nested.inputs[0].contents.int64_contents) == [1, 2, 3, 4]


def _tensor(**changes) -> dict:
    return {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0], **changes}


@pytest.mark.parametrize(("tensor", "reason"), [
    (_tensor(shape=[3]), "inputs[0] ('x'): shape [3] holds 3 elements, data has 2"),
    (_tensor(datatype="FP8"), "inputs[0] ('x').datatype: 'FP8' is not an OIP datatype"),
    (_tensor(data=[1.0, "a"]), "inputs[0] ('x').data: 'a' is not a FP32 value"),
    (_tensor(data=[1.0, None]), "inputs[0] ('x').data: None is not a FP32 value"),
    (_tensor(datatype="INT32", data=[1, 2.5]), "inputs[0] ('x').data: 2.5 is not a INT32"),
    (_tensor(datatype="INT8", data=[1, 300]), "inputs[0] ('x').data: a value is out of range"),
    (_tensor(datatype="UINT8", data=[1, -1]), "inputs[0] ('x').data: a value is out of range"),
    (_tensor(data=[1.0, [2.0]]), "inputs[0] ('x').data: [2.0] is not a FP32 value"),
    (_tensor(datatype="BOOL", data=[True, 2]), "inputs[0] ('x').data: 2 is not a BOOL value"),
    (_tensor(datatype="BYTES", data=["a", 1]), "BYTES elements must be strings, got 1"),
    (_tensor(shape=[-2]), "inputs[0] ('x').shape: a list of non-negative integers"),
    (_tensor(shape="2"), "inputs[0] ('x').shape: a list of non-negative integers"),
    ({"datatype": "FP32"}, "inputs[0].name: a tensor with a name is required"),
])
def test_bad_json_tensors_are_refused_naming_the_tensor(tensor, reason):
    with pytest.raises(TensorError) as e:
        request_from_json("m", {"inputs": [tensor]})
    assert reason in str(e.value)


def test_a_request_without_inputs_is_refused():
    with pytest.raises(TensorError, match="inputs: a list of tensors is required"):
        request_from_json("m", {"input": []})


def _raw_request(datatype: str, shape: list[int], raw: bytes) -> oip.ModelInferRequest:
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype=datatype, shape=shape)
    req.raw_input_contents.append(raw)
    return req


@pytest.mark.parametrize(("req", "reason"), [
    (_raw_request("FP32", [2], b"\x00" * 7),
     "inputs[0] ('x'): 7 raw bytes do not divide into FP32 elements of 4 bytes"),
    (_raw_request("FP32", [3], b"\x00" * 8),
     "inputs[0] ('x'): shape [3] holds 3 elements, the contents have 2"),
    (_raw_request("BYTES", [1], b"\x09\x00\x00\x00abc"),
     "inputs[0] ('x'): raw BYTES contents end inside an element"),
    (_raw_request("FP8", [1], b"\x00"), "inputs[0] ('x').datatype: 'FP8' is not an OIP"),
])
def test_bad_protobuf_tensors_are_refused_naming_the_tensor(req, reason):
    with pytest.raises(TensorError) as e:
        request_to_json(req)
    assert reason in str(e.value)


def test_typed_fp16_contents_are_refused_with_the_reason():
    req = oip.ModelInferRequest(model_name="m")
    req.inputs.add(name="h", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(TensorError, match=r"FP16 travels only as raw contents"):
        request_to_json(req)


def test_raw_contents_must_match_the_tensors_one_to_one():
    req = _raw_request("FP32", [1], b"\x00" * 4)
    req.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(TensorError, match=r"raw_input_contents: 1 entries for 2 inputs"):
        request_to_json(req)
