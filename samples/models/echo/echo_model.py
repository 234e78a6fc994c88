"""Sample custom MLServer runtime: returns every input tensor unchanged, under its own name, so
a test can see exactly which tensors a step received."""

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class Echo(MLModel):
    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        outputs = [NumpyCodec.encode_output(i.name, NumpyCodec.decode_input(i))
                   for i in payload.inputs]
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=outputs)
