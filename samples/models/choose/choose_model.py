"""Sample custom MLServer runtime for conditional routing: the input comes back as POS when its
first value is >= 0, else as NEG; only one of the two tensors is ever produced."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Choose(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        branch = "POS" if x.flat[0] >= 0 else "NEG"
        out = NumpyCodec.encode_output(branch, x)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
