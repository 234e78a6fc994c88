"""The core2 scheduler: desired state, placement, model versions, xDS for Envoy."""
