"""Sample custom MLServer runtime: OUTPUT = the single input tensor + 10."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse


class Add10(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if len(payload.inputs) != 1:
            raise MLServerError(f"add10 takes exactly one input tensor, got "
                                f"{[i.name for i in payload.inputs]}", status_code=400)
        x = NumpyCodec.decode_input(payload.inputs[0])
        out = NumpyCodec.encode_output("OUTPUT", np.asarray(x) + 10)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
