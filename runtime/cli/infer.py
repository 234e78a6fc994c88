"""`core2 model infer` and `core2 pipeline infer`: one inference through Envoy, REST or gRPC,
over TLS when the inference URL is https (verified with the platform's CA)."""

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import click

from runtime.cli.context import CliError, global_options, options


def _payload(text: str) -> str:
    return Path(text[1:]).read_text() if text.startswith("@") else text


def infer(base_url: str, name: str, payload: str, grpc_mode: bool = False,
          headers: dict | None = None, path_kind: str = "models",
          ca_file: str | None = None) -> tuple[int, str]:
    """Returns (HTTP-like status, body text). `name` may be `x.pipeline` / `x.experiment`.
    An https `base_url` is verified with `ca_file` (else the system's trust store); gRPC then
    uses TLS too."""
    body = _payload(payload)
    headers = {k.strip(): v.strip() for k, v in (headers or {}).items()}
    headers.setdefault("seldon-model", name)
    target = name.split(".")[0]
    if grpc_mode:
        return _infer_grpc(base_url, name, target, body, headers, ca_file)
    req = urllib.request.Request(f"{base_url}/v2/{path_kind}/{target}/infer", data=body.encode(),
                                 headers={"content-type": "application/json", **headers})
    try:
        context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        with urllib.request.urlopen(req, timeout=120, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError as e:
        return 503, json.dumps({"error": f"inference endpoint {base_url} unreachable: "
                                         f"{e.reason}"})


def _infer_grpc(base_url: str, name: str, target: str, body: str, headers: dict,
                ca_file: str | None):
    import grpc

    from runtime.oip import TensorError, request_from_json, response_to_json
    from runtime.pb import grpc_service_pb2_grpc

    try:
        request = request_from_json(target, json.loads(body))
    except (json.JSONDecodeError, TensorError) as e:
        return 400, json.dumps({"error": f"bad request: {e}"})
    url = urlparse(base_url)
    if url.scheme == "https":
        roots = Path(ca_file).read_bytes() if ca_file else None
        channel = grpc.secure_channel(url.netloc, grpc.ssl_channel_credentials(roots))
    else:
        channel = grpc.insecure_channel(url.netloc)
    with channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            resp = stub.ModelInfer(request, metadata=list(headers.items()), timeout=120)
        except grpc.RpcError as e:
            return 400 if e.code() == grpc.StatusCode.INVALID_ARGUMENT else 500, json.dumps(
                {"error": f"{e.code().name}: {e.details()}"})
    return 200, json.dumps(response_to_json(resp))


def infer_command(path_kind: str, suffix: str) -> click.Command:
    """`infer NAME PAYLOAD` for models (path_kind "models") or pipelines ("pipelines",
    addressed as NAME.pipeline)."""
    noun = path_kind.rstrip("s")

    @click.command("infer")
    @click.argument("name")
    @click.argument("payload", metavar="JSON|@FILE")
    @click.option("--grpc", "grpc_mode", is_flag=True, help="gRPC instead of REST")
    @click.option("-H", "--header", "headers", multiple=True, metavar="NAME:VALUE",
                  help="extra request header (repeatable)")
    @global_options
    def infer_cli(name: str, payload: str, grpc_mode: bool, headers: tuple[str, ...]) -> None:
        opts = options()
        bad = [h for h in headers if ":" not in h]
        if bad:
            raise CliError(f"--header {bad[0]!r}: expected NAME:VALUE", 2)
        try:
            status, body = infer(opts.inference_url(), name + suffix, payload,
                                 grpc_mode=grpc_mode, path_kind=path_kind,
                                 headers=dict(h.split(":", 1) for h in headers),
                                 ca_file=opts.inference_ca())
        except OSError as e:  # @FILE unreadable
            raise CliError(f"{payload}: {e.strerror or e}", 2) from None
        click.echo(body)
        if status >= 400:
            raise CliError(f"{noun} inference failed with status {status}")

    infer_cli.help = (f"Send one OIP inference request to a {noun} through Envoy (REST, or "
                      f"--grpc); prints the response JSON. https URLs are verified with "
                      f"$CORE2_INFERENCE_CA or the local platform's CA.\n\n\b\nExample: "
                      f"core2 {noun} infer NAME @request.json --grpc")
    return infer_cli
