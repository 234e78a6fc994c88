# The two commands a new user runs (see README.md): `make up` and `make test`.
.PHONY: setup up down test lint protos

setup:
	scripts/setup

up: setup
	.venv/bin/core2 up --detach
	.venv/bin/core2 apply -f samples/quickstart.yaml

down:
	.venv/bin/core2 down

lint:
	.venv/bin/ruff check .

test: setup lint
	.venv/bin/pytest -q

protos:
	scripts/gen-protos
