"""An envtest-style Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager, no scheduler and no kubelet.

Objects are stored, validated, defaulted and served exactly as on a cluster, and the
controllers do their bookkeeping (garbage collection, namespace deletion, ReplicaSets and Pods
for Deployments); no pod is ever scheduled or run.
The binaries come from scripts/tools (.tools/bin). Authentication is a static admin token (in
system:masters); the serving certificate is signed by a test CA that the kubeconfig trusts.
"""

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runtime.procs import Service, free_port, http_ok, wait_until

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
TOKEN = "core2-test-admin-token"


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run scripts/tools (it builds the cluster tools)")
    return str(path)


class ControlPlane:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.services: list[Service] = []
        self.port = 0
        self.kubeconfig = workdir / "kubeconfig"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "ControlPlane":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # never leave an etcd behind a failed start
            raise

    def _start(self, timeout: float) -> "ControlPlane":
        logs = self.dir / "logs"
        etcd_port, etcd_peer, self.port = free_port(), free_port(), free_port()
        etcd = Service("etcd", [
            tool("etcd"), "--data-dir", str(self.dir / "etcd"), "--name", "core2-test",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"core2-test=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a test store: speed over durability
            "--log-level", "warn"], logs).start()
        self.services.append(etcd)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), timeout,
                   "etcd health", etcd)

        ca = trustme.CA()
        serving = ca.issue_cert("127.0.0.1", "localhost")
        pki = self.dir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        serving.cert_chain_pems[0].write_to_path(str(pki / "apiserver.crt"))
        serving.private_key_pem.write_to_path(str(pki / "apiserver.key"))
        ca.cert_pem.write_to_path(str(pki / "ca.crt"))
        ca.private_key_pem.write_to_path(str(pki / "ca.key"))
        _service_account_key(pki / "sa.key", pki / "sa.pub")
        (pki / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')

        apiserver = Service("kube-apiserver", [
            tool("kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--token-auth-file", str(pki / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", f"https://127.0.0.1:{self.port}",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--allow-privileged=true",
            # the `kubernetes` Service's endpoints may not be a loopback address
            "--endpoint-reconciler-type", "none",
            # no controller-manager runs to mint ServiceAccount tokens for pods
            "--disable-admission-plugins", "ServiceAccount",
            "--cert-dir", str(pki)], logs).start()
        self.services.append(apiserver)
        self.ca_file = pki / "ca.crt"
        wait_until(lambda: self._ready(), timeout, "kube-apiserver /readyz", apiserver,
                   interval=0.25)
        self._write_kubeconfig()

        manager_port = free_port()
        manager = Service("kube-controller-manager", [
            tool("kube-controller-manager"), "--kubeconfig", str(self.kubeconfig),
            "--bind-address", "127.0.0.1", "--secure-port", str(manager_port),
            "--leader-elect=false", "--use-service-account-credentials=false",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"),
            "--cluster-signing-key-file", str(pki / "ca.key")], logs).start()
        self.services.append(manager)
        wait_until(lambda: _healthy(f"https://127.0.0.1:{manager_port}/healthz"), timeout,
                   "kube-controller-manager /healthz", manager, interval=0.25)
        return self

    def _ready(self) -> bool:
        try:
            return self.get("/readyz") == "ok"
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        req = urllib.request.Request(self.url + path,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return resp.read().decode()

    def get_json(self, path: str) -> dict:
        return json.loads(self.get(path))

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "envtest",
            "clusters": [{"name": "envtest", "cluster": {
                "server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest",
                                                         "user": "admin"}}],
        }))

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()


def _healthy(url: str) -> bool:
    """A component's /healthz, served with its own self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _service_account_key(key_file: Path, pub_file: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    pub_file.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
