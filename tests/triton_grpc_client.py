"""tritonclient's gRPC client against core2's Envoy, in its own process: tritonclient registers
the inference protos under another file name than runtime.pb, and one process cannot hold both.

    python -m tests.triton_grpc_client HOST:PORT MODEL   -> prints {"model_name", "OUTPUT0", ...}
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient


def main() -> None:
    url, model = sys.argv[1], sys.argv[2]
    client = grpcclient.InferenceServerClient(url=url)
    inputs = []
    for name, values in (("INPUT0", np.arange(1, 17)), ("INPUT1", np.ones(16))):
        tensor = grpcclient.InferInput(name, [1, 16], "INT32")
        tensor.set_data_from_numpy(values.astype(np.int32).reshape(1, 16))
        inputs.append(tensor)
    result = client.infer(model, inputs, headers={"seldon-model": model})
    answer = result.get_response()
    print(json.dumps({"model_name": answer.model_name, "model_version": answer.model_version,
                      **{o: result.as_numpy(o).ravel().tolist() for o in ("OUTPUT0", "OUTPUT1")},
                      "ready": client.is_model_ready(model, headers={"seldon-model": model})}))


if __name__ == "__main__":
    main()
