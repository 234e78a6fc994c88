"""Sample custom MLServer runtime that fails on purpose: refuses negative values (HTTP 400),
otherwise passes its single input through as OUTPUT."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse


class CheckPositive(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        if (x < 0).any():
            raise MLServerError("negative values are not accepted", status_code=400)
        out = NumpyCodec.encode_output("OUTPUT", x)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
