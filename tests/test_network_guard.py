"""The network guard blocks every non-loopback address, and does so without sending a single packet.

The wrapper is tested around a fake ``connect`` that only records what reaches it, so no test here (or anywhere)
opens a connection to a non-loopback address.
"""
from __future__ import annotations

import socket

import pytest

import netguard

BLOCKED_IP = "203.0.113.7"  # TEST-NET-3 (RFC 5737): documentation only, never routed


class Recorder:
    """Stands in for the original ``socket.socket.connect``: records its calls, touches no network."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, sock, *args):
        self.calls.append(args)
        return 0


class FakeSocket:
    def __init__(self, family: int) -> None:
        self.family = family


@pytest.fixture
def recorded_connect():
    recorder = Recorder()
    return recorder, netguard.guarded(recorder, "connect")


@pytest.mark.parametrize("address", [(BLOCKED_IP, 80), ("example.org", 443), ("10.0.0.1", 22), ("", 80),
                                     ("0.0.0.0", 80), ("<broadcast>", 9)])
def test_guard_blocks_non_loopback_ipv4_before_the_real_connect(recorded_connect, address):
    recorder, connect = recorded_connect
    with pytest.raises(RuntimeError, match="network access to .* is blocked in tests"):
        connect(FakeSocket(socket.AF_INET), address)
    assert recorder.calls == []


@pytest.mark.parametrize("address", [("2001:db8::7", 80, 0, 0), ("::ffff:203.0.113.7", 80, 0, 0),
                                     ("example.org", 443, 0, 0)])
def test_guard_blocks_non_loopback_ipv6_before_the_real_connect(recorded_connect, address):
    recorder, connect = recorded_connect
    with pytest.raises(RuntimeError):
        connect(FakeSocket(socket.AF_INET6), address)
    assert recorder.calls == []


@pytest.mark.parametrize("family, address", [
    (socket.AF_INET, ("127.0.0.1", 8888)),
    (socket.AF_INET, ("127.3.2.1", 8888)),
    (socket.AF_INET, ("localhost", 8888)),
    (socket.AF_INET6, ("::1", 8888, 0, 0)),
    (socket.AF_INET6, ("::ffff:127.0.0.1", 8888, 0, 0)),
    (socket.AF_UNIX, "/tmp/kernel.sock"),
    (socket.AF_UNIX, b"\0abstract"),
])
def test_guard_lets_loopback_and_unix_sockets_through(recorded_connect, family, address):
    recorder, connect = recorded_connect
    assert connect(FakeSocket(family), address) == 0
    assert recorder.calls == [(address,)]


def test_host_names_other_than_localhost_are_never_resolved(monkeypatch):
    def no_lookup(*args, **kwargs):
        raise AssertionError("the guard must not resolve host names")
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    monkeypatch.setattr(socket, "gethostbyname", no_lookup)
    with pytest.raises(RuntimeError):
        netguard.check_address(socket.AF_INET, ("pypi.org", 443))
    netguard.check_address(socket.AF_INET, ("localhost", 443))


def test_sendto_is_guarded_too():
    recorder = Recorder()
    sendto = netguard.guarded(recorder, "sendto")
    with pytest.raises(RuntimeError):
        sendto(FakeSocket(socket.AF_INET), b"x", (BLOCKED_IP, 53))
    with pytest.raises(RuntimeError):
        sendto(FakeSocket(socket.AF_INET), b"x", 0, (BLOCKED_IP, 53))
    assert recorder.calls == []
    sendto(FakeSocket(socket.AF_INET), b"x", ("127.0.0.1", 53))
    assert recorder.calls == [(b"x", ("127.0.0.1", 53))]


def test_guard_is_installed_for_the_whole_session():
    assert netguard.installed()
    for name in netguard.GUARDED_METHODS:
        assert getattr(socket.socket, name).__netguard_original__ is netguard._originals[name]


def test_installed_guard_blocks_a_real_socket_without_sending(monkeypatch):
    """A real socket object, with the guard's original connect swapped for a recorder: blocked, never sent."""
    recorder = Recorder()
    monkeypatch.setitem(netguard._originals, "connect", recorder)
    monkeypatch.setattr(socket.socket, "connect", netguard.guarded(recorder, "connect"))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(RuntimeError, match="blocked in tests"):
            sock.connect((BLOCKED_IP, 80))
        with pytest.raises(RuntimeError, match="blocked in tests"):
            socket.create_connection((BLOCKED_IP, 80), timeout=0.01)
        sock.connect(("127.0.0.1", 9))
    assert recorder.calls == [(("127.0.0.1", 9),)]


def test_installed_guard_allows_a_real_loopback_connection():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_guard_reaches_child_python_processes_such_as_notebook_kernels():
    """A kernel is a child process: it must start with the guard installed (checked without any traffic)."""
    import subprocess
    import sys

    code = ("import socket; m = socket.socket.connect; "
            "print(hasattr(m, '__netguard_original__'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True", out.stderr


def test_notebook_kernel_starts_with_the_guard(tmp_path):
    """The same, through a real Jupyter kernel started the way nbval starts one."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import socket; print(hasattr(socket.socket.connect, '__netguard_original__'))")])
    NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert nb.cells[0].outputs[0]["text"].strip() == "True"
