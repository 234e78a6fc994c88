"""Names shared by the agent and the name hook inside MLServer (kept apart so the agent never
imports MLServer or the inference protos)."""

INTERNAL_MODEL_HEADER = "seldon-internal-model"  # set by Envoy: the model's name in the server
USAGE_PATH = "/core2/usage"  # the hook's answer: {internal name: unix time of last inference}
