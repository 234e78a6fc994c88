# The two commands a new user runs (see README.md): `make up` and `make test`.
.PHONY: setup tools up down test lint protos

setup:
	scripts/setup

# etcd, kube-apiserver, the Pulumi CLI and its kubernetes plugin, Strimzi's CRDs: built from
# their registries once per machine into ~/.cache/core2/tools (the cluster tests need them)
tools:
	scripts/tools

up: setup
	.venv/bin/core2 up --detach
	.venv/bin/core2 apply -f samples/quickstart.yaml

down:
	.venv/bin/core2 down

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy

test: setup tools lint
	.venv/bin/pytest -q

protos:
	scripts/gen-protos
