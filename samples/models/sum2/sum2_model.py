"""Sample custom MLServer runtime: SUM = A + B; the inputs must be named A and B, which makes
it the sample for tensorMap renaming and joins."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse


class Sum2(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        tensors = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        if set(tensors) != {"A", "B"}:
            raise MLServerError(f"sum2 needs input tensors A and B, got {sorted(tensors)}",
                                status_code=400)
        out = NumpyCodec.encode_output("SUM", tensors["A"] + tensors["B"])
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
