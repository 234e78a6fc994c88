"""A seeded generator of pipeline requests, most of them malformed, for REST and gRPC: each case
says what the gateway must answer (400, or 200 for the valid ones mixed in). Every malformed
case is malformed by construction (a mutation no valid request has), so a 200 for one of them
is a real fault, not noise."""

import json
import random
from dataclasses import dataclass, field

from runtime.pb import grpc_service_pb2 as oip

SEED = 20261130


@dataclass
class RestCase:
    what: str
    body: bytes
    expect: int  # 400 or 200
    headers: dict = field(default_factory=dict)


@dataclass
class GrpcCase:
    what: str
    raw: bytes   # the serialized message (not always a valid one)
    ok: bool
    metadata: tuple = ()


def valid_tensor(rng: random.Random) -> dict:
    n = rng.randint(1, 6)
    return {"name": "x", "shape": [n], "datatype": "FP32",
            "data": [round(rng.uniform(-100, 100), 2) for _ in range(n)]}


def _tensor_mutation(rng: random.Random, t: dict) -> tuple[str, dict]:
    t = dict(t)
    kind = rng.randrange(14)
    if kind == 0:
        key = rng.choice(["name", "shape", "datatype", "data"])
        del t[key]
        return f"tensor without {key}", t
    if kind == 1:
        key = rng.choice(["name", "shape", "datatype", "data"])
        junk = key[:2] + rng.choice([",", " ", "\u00e9", "-", "."]) + key[2:]
        t[junk] = t.pop(key)
        return f"tensor with {key} misspelt {junk!r}", t
    if kind == 2:
        t["name"] = rng.choice([None, 3, "", ["x"], {"n": 1}, True])
        return f"name {t['name']!r}", t
    if kind == 3:
        t["name"] = "n" * rng.randint(257, 5000)
        return "name too long", t
    if kind == 4:
        t["datatype"] = rng.choice(["FLOAT", "fp32", "", "FP31", 32, None, ["FP32"], "STRING"])
        return f"datatype {t['datatype']!r}", t
    if kind == 5:
        t["shape"] = rng.choice(["[1]", 1, None, {}, [-1], [1.5], [True], [[1]], ["1"],
                                 [1] * 17])
        return f"shape {t['shape']!r}", t
    if kind == 6:
        t["shape"] = [len(t["data"]) + rng.randint(1, 1000)]
        return "data does not fill the shape", t
    if kind == 7:
        t["shape"] = [rng.choice([2**31, 2**40, 10**12])]
        return "huge shape, tiny data", t
    if kind == 8:
        t["data"] = rng.choice([{"a": 1}, {}])
        return "data is an object", t
    if kind == 9:
        t["parameters"] = rng.choice(["p", 1, [1], True])
        return "tensor parameters not an object", t
    if kind == 10:
        depth = rng.randint(40, 300)
        t["parameters"] = json.loads('{"a":' * depth + "1" + "}" * depth)
        return "tensor parameters nested deep", t
    if kind == 11:
        t["data"] = [[1.0, 2.0], [3.0]] if rng.random() < 0.5 else [[[1.0]]] * 3
        t["shape"] = [7]
        return "nested data not filling the shape", t
    if kind == 12:
        t["shape"] = [len(t["data"]), 2]
        return "two dimensions, data for one", t
    t["data"] = []
    return "empty data for a non-empty shape", t


def rest_cases(count: int, seed: int = SEED) -> list[RestCase]:
    rng = random.Random(seed)
    cases: list[RestCase] = []
    while len(cases) < count:
        roll = rng.random()
        base = {"inputs": [valid_tensor(rng)]}
        if roll < 0.08:  # valid: must be answered 200 (the gateway still works)
            cases.append(RestCase("valid", json.dumps(base).encode(), 200))
        elif roll < 0.55:
            what, t = _tensor_mutation(rng, base["inputs"][0])
            inputs = [t] if rng.random() < 0.7 else [valid_tensor(rng) | {"name": "y"}, t]
            cases.append(RestCase(what, json.dumps({"inputs": inputs}).encode(), 400))
        elif roll < 0.75:
            cases.append(_body_case(rng, base))
        else:
            cases.append(_header_case(rng, base))
    return cases


def _body_case(rng: random.Random, base: dict) -> RestCase:
    kind = rng.randrange(12)
    good = json.dumps(base)
    if kind == 0:
        return RestCase("empty inputs", b'{"inputs": []}', 400)
    if kind == 1:
        v = rng.choice(["{}", "null", '"x"', "3", '{"a": 1}'])
        return RestCase(f"inputs {v}", f'{{"inputs": {v}}}'.encode(), 400)
    if kind == 2:
        return RestCase("no inputs", rng.choice([b"{}", b'{"outputs": []}', b'{"id": "a"}']), 400)
    if kind == 3:
        return RestCase("not an object", rng.choice([b"[]", b"[1,2]", b'"x"', b"3", b"null",
                                                     b"true"]), 400)
    if kind == 4:
        return RestCase("truncated JSON", good[:rng.randint(0, len(good) - 1)].encode(), 400)
    if kind == 5:
        opener = rng.choice(["[", '{"a":'])
        return RestCase("deeply nested JSON", (opener * rng.randint(2_000, 200_000)).encode(),
                        400)
    if kind == 6:
        return RestCase("bad UTF-8", b'{"inputs": [{"name": "\xff\xfe"}]}', 400)
    if kind == 7:
        return RestCase("inputs of non-objects", json.dumps(
            {"inputs": [rng.choice([1, "x", None, [], True])]}).encode(), 400)
    if kind == 8:
        return RestCase("duplicate tensor names", json.dumps(
            {"inputs": [base["inputs"][0], base["inputs"][0]]}).encode(), 400)
    if kind == 9:
        return RestCase("parameters not an object", json.dumps(
            {**base, "parameters": rng.choice([1, "p", [1]])}).encode(), 400)
    if kind == 10:
        return RestCase("id not a string", json.dumps(
            {**base, "id": rng.choice([1, [], {}, True])}).encode(), 400)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return RestCase("random bytes", b"\x00" + noise, 400)


def _header_case(rng: random.Random, base: dict) -> RestCase:
    body = json.dumps(base).encode()
    if rng.random() < 0.85:
        value = rng.choice(["-1", "0", "abc", "nan", "inf", "-inf", "1e309", "1e12",
                            "86400001", "1,000", "0x10", "-0.5"])
        return RestCase(f"seldon-timeout-ms {value!r}", body, 400,
                        {"seldon-timeout-ms": value})
    return RestCase("x-request-id too long", body, 400, {"x-request-id": "r" * 300})


def grpc_cases(count: int, seed: int = SEED + 1) -> list[GrpcCase]:
    rng = random.Random(seed)
    cases: list[GrpcCase] = []
    while len(cases) < count:
        kind = rng.randrange(12)
        req = oip.ModelInferRequest(model_name="chain")
        n = rng.randint(1, 5)
        t = req.inputs.add(name="x", datatype="FP32", shape=[n])
        if kind == 0:
            t.contents.fp32_contents.extend([float(i) for i in range(n)])
            cases.append(GrpcCase("valid", req.SerializeToString(), True))
            continue
        if kind == 9:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
            cases.append(GrpcCase("random bytes", raw, False))
            continue
        if kind == 10:
            t.contents.fp32_contents.extend([1.0] * n)
            good = req.SerializeToString()
            cases.append(GrpcCase("truncated message", good[:rng.randint(1, len(good) - 1)],
                                  False))
            continue
        if kind == 11:
            t.contents.fp32_contents.extend([1.0] * n)
            value = rng.choice(["-1", "abc", "0", "nan"])
            cases.append(GrpcCase(f"seldon-timeout-ms {value!r}", req.SerializeToString(),
                                  False, (("seldon-timeout-ms", value),)))
            continue
        if kind == 1:
            t.contents.fp32_contents.extend([1.0] * (n + rng.randint(1, 50)))
            what = "contents do not fill the shape"
        elif kind == 2:
            t.datatype = rng.choice(["FLOAT", "", "fp32", "X" * 40])
            t.contents.fp32_contents.extend([1.0] * n)
            what = f"datatype {t.datatype!r}"
        elif kind == 3:
            req.raw_input_contents.append(
                bytes(rng.randrange(256) for _ in range(4 * n + rng.randint(1, 3))))
            what = "raw contents not a multiple of FP32"
        elif kind == 4:
            req.raw_input_contents.extend([b"\x00" * 4 * n, b"\x00" * 4])
            what = "more raw contents than inputs"
        elif kind == 5:
            del t.shape[:]
            t.shape.extend([2**40])
            t.contents.fp32_contents.append(1.0)
            what = "huge shape, tiny contents"
        elif kind == 6:
            del req.inputs[:]
            what = "no inputs"
        elif kind == 7:
            t.name = ""
            t.contents.fp32_contents.extend([1.0] * n)
            what = "empty name"
        else:
            t.contents.fp32_contents.extend([1.0] * n)
            req.inputs.add(name="x", datatype="FP32", shape=[n]).contents.fp32_contents.extend(
                [1.0] * n)
            what = "duplicate names"
        cases.append(GrpcCase(what, req.SerializeToString(), False))
    return cases
