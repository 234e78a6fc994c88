"""Generated gRPC modules; regenerate with scripts/gen-protos."""
