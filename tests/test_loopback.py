"""Local mode binds loopback only: every listening TCP socket owned by the platform's
processes (and their children) is on 127.0.0.1 or ::1, read from /proc."""

import os
from ipaddress import ip_address
from pathlib import Path

import pytest

from runtime.local.config import LocalConfig
from runtime.local.platform import Platform
from tests.conftest import free_ports

LISTEN = "0A"


def _process_groups() -> dict[int, list[int]]:
    """pgid -> pids, for every process."""
    groups: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        groups.setdefault(int(fields[2]), []).append(int(entry.name))
    return groups


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        pass
    return inodes


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ip_address(raw[::-1]))
    # IPv6: four little-endian 32-bit words
    return str(ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def _listeners() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == LISTEN:
                addr, port = cols[1].split(":")
                found[cols[9]] = (_address(addr), int(port, 16))
    return found


def _is_loopback(addr: str) -> bool:
    ip = ip_address(addr)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@pytest.fixture(scope="module")
def sockets(tmp_path_factory) -> dict[str, list[tuple[str, int]]]:
    """service name -> its listening (address, port)s, on a platform with pipelines."""
    platform = Platform(tmp_path_factory.mktemp("loopback"),
                        LocalConfig(ports=free_ports(), pipelines=True)).start()
    try:
        groups, listeners = _process_groups(), _listeners()
        out = {}
        for name, svc in platform.services.items():
            inodes = set().union(*(_socket_inodes(p) for p in groups.get(svc.pid, [svc.pid])))
            out[name] = sorted(listeners[i] for i in inodes if i in listeners)
        return out
    finally:
        platform.stop()


def test_every_service_listens_and_only_on_loopback(sockets):
    assert all(sockets.values()), f"a service with no listening socket: {sockets}"
    exposed = {name: [a for a in addrs if not _is_loopback(a[0])]
               for name, addrs in sockets.items()}
    exposed = {n: a for n, a in exposed.items() if a}
    assert exposed == {}, f"listening beyond loopback: {exposed}"
    envoy = sockets["envoy"]
    assert len(envoy) >= 2 and all(_is_loopback(a) for a, _ in envoy)  # listener and admin
