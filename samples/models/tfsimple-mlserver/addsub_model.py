"""tfsimple's add and subtract as a custom MLServer runtime: the same model as
samples/models/tfsimple (Triton's Python backend), to compare the two servers (bench/triton.py)."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse


class AddSub(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensors = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        if set(tensors) != {"INPUT0", "INPUT1"}:
            raise MLServerError(f"tfsimple takes INPUT0 and INPUT1, got {sorted(tensors)}",
                                status_code=400)
        a, b = (np.asarray(tensors[n], dtype=np.int32) for n in ("INPUT0", "INPUT1"))
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[
            NumpyCodec.encode_output("OUTPUT0", a + b),
            NumpyCodec.encode_output("OUTPUT1", a - b)])
