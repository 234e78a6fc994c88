"""Sample custom MLServer runtime for step batching: `OUTPUT = x + 10` plus `ROWS`, the first
dimension of the request this call received, once per row, so each request of a batch can see
how many rows its model call held. Refuses negative values with HTTP 400 (a failing batch).
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse


class Rows(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        if (x < 0).any():
            raise MLServerError("rows refuses negative values", status_code=400)
        rows = np.full(x.shape[0], x.shape[0], dtype=np.int64)
        outputs = [NumpyCodec.encode_output("OUTPUT", x + 10),
                   NumpyCodec.encode_output("ROWS", rows)]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
