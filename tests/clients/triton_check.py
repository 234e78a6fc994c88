"""Run tritonclient (HTTP and gRPC) against core2's Envoy; prints the answers as JSON.
Usage: triton_check.py http://HOST:PORT MODEL"""

import json
import sys

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

url, model = sys.argv[1].removeprefix("http://"), sys.argv[2]
data = np.array([[6.0, 2.2, 5.0, 1.5]], dtype=np.float32)
headers = {"seldon-model": model}

http = thttp.InferenceServerClient(url)
inp = thttp.InferInput("predict", list(data.shape), "FP32")
inp.set_data_from_numpy(data, binary_data=False)
http_result = http.infer(model, [inp], headers=headers).as_numpy("predict")

grpc_client = tgrpc.InferenceServerClient(url)
ginp = tgrpc.InferInput("predict", list(data.shape), "FP32")
ginp.set_data_from_numpy(data)
grpc_result = grpc_client.infer(model, [ginp], headers=headers).as_numpy("predict")

print(json.dumps({"http": http_result.flatten().tolist(), "grpc": grpc_result.flatten().tolist()}))
