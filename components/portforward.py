"""A local TCP port that forwards to a pod port through the Kubernetes API (no kubectl).

Each accepted connection gets its own API port-forward stream; bytes are pumped both ways by
two threads. Used by the dynamic providers to reach the scheduler from a CI runner or laptop.
"""

import os
import select
import socket
import tempfile
import threading


def is_path(kubeconfig: str) -> bool:
    """A kubeconfig given as a path, not as its YAML (or JSON) contents."""
    text = kubeconfig.lstrip()
    return "\n" not in text and not text.startswith(("{", "apiVersion:"))


def check_kubeconfig(kubeconfig: str | None) -> None:
    """A path that does not exist is a typo or a missing file, not kubeconfig contents: say
    so, naming the stack config key, instead of failing to parse the path as YAML."""
    if kubeconfig and is_path(kubeconfig) and not os.path.isfile(kubeconfig):
        raise ValueError(f"kubeconfig: no file at {kubeconfig} (stack config "
                         "`core2:kubeconfig`: a path to a kubeconfig file, or its contents "
                         "as a secret)")


def api_client(kubeconfig: str | None, context: str | None):
    """A kubernetes ApiClient from the stack's kubeconfig (a path or the YAML itself) and
    context. Never falls back to the ambient ~/.kube/config."""
    from kubernetes import client, config

    if not kubeconfig:
        raise ValueError("kubeconfig: required to reach the scheduler through a port-forward")
    check_kubeconfig(kubeconfig)
    path, tmp = kubeconfig, None
    if not is_path(kubeconfig):
        tmp = tempfile.NamedTemporaryFile("w", suffix=".kubeconfig", delete=False)
        tmp.write(kubeconfig)
        tmp.close()
        path = tmp.name
    try:
        cfg = client.Configuration()
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
        return client.ApiClient(cfg)
    finally:
        if tmp:
            os.unlink(tmp.name)


class PortForward:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str, pod: str,
                 remote_port: int):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client(kubeconfig, context))
        self.namespace, self.pod, self.remote_port = namespace, pod, remote_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.local_port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.local_port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        pf = portforward(self.core.connect_get_namespaced_pod_portforward, self.pod,
                         self.namespace, ports=str(self.remote_port))
        remote = pf.socket(self.remote_port)
        remote.setblocking(True)
        try:
            while not self._closed.is_set():
                readable, _, _ = select.select([conn, remote], [], [], 0.5)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (remote if src is conn else conn).sendall(data)
        except OSError:
            return
        finally:
            conn.close()
            remote.close()
            pf.close()

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
