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


# ----------------------------------------------------------------------------------------------------------------
# name resolution (a DNS query leaves before any connect), sendmsg, and the raw _socket.socket

@pytest.mark.parametrize("call", [("getaddrinfo", ("example.org", 443)), ("getaddrinfo", (b"pypi.org", None)),
                                  ("gethostbyname", ("example.org",)), ("gethostbyname_ex", ("example.org",)),
                                  ("gethostbyaddr", (BLOCKED_IP,)), ("gethostbyaddr", ("example.org",)),
                                  ("getnameinfo", ((BLOCKED_IP, 80), 0))], ids=str)
def test_resolvers_block_a_lookup_that_would_send_a_query(call):
    name, args = call
    recorder = Recorder()
    resolve = netguard.guarded_resolver(lambda *a: recorder(None, *a), name)
    with pytest.raises(netguard.NetworkBlocked, match="blocked in tests") as info:
        resolve(*args)
    assert isinstance(info.value, socket.gaierror)  # code that copes with being offline copes with this too
    assert recorder.calls == []


@pytest.mark.parametrize("call", [("getaddrinfo", ("localhost", 8888)), ("getaddrinfo", ("127.0.0.1", 80)),
                                  ("getaddrinfo", (None, 8888)), ("getaddrinfo", ("", 0)),
                                  ("getaddrinfo", (BLOCKED_IP, 80)), ("getaddrinfo", ("::1", 80)),
                                  ("gethostbyname", ("localhost",)), ("gethostbyname", ("10.0.0.1",)),
                                  ("gethostbyaddr", ("127.0.0.1",)),
                                  ("getnameinfo", ((BLOCKED_IP, 80), socket.NI_NUMERICHOST))], ids=str)
def test_resolvers_let_through_what_sends_no_query(call):
    """Loopback names, numeric addresses (nothing to look up: a connect to them is still checked) and no host."""
    name, args = call
    recorder = Recorder()
    assert netguard.guarded_resolver(lambda *a: recorder(None, *a), name)(*args) == 0
    assert recorder.calls == [args]


def test_installed_guard_blocks_dns_before_a_url_is_opened(monkeypatch):
    """urllib resolves the name first: that query is what must not leave."""
    import _socket
    import urllib.error
    import urllib.request

    assert _socket.getaddrinfo.__netguard_original__ is not None
    recorder = Recorder()
    monkeypatch.setattr(_socket, "getaddrinfo", netguard.guarded_resolver(lambda *a: recorder(None, *a),
                                                                          "getaddrinfo"))
    with pytest.raises(urllib.error.URLError, match="blocked in tests"):
        urllib.request.urlopen("http://example.org/", timeout=0.01)
    with pytest.raises(netguard.NetworkBlocked):
        socket.getaddrinfo("example.org", 80)
    with pytest.raises(netguard.NetworkBlocked):
        socket.create_connection(("example.org", 80), timeout=0.01)
    assert recorder.calls == []


def test_installed_guard_covers_every_resolver_of_socket_and__socket():
    import _socket
    for name in netguard.RESOLVERS:
        assert hasattr(getattr(_socket, name), "__netguard_original__"), name
        if name != "getaddrinfo":  # socket.getaddrinfo is Python code that calls _socket.getaddrinfo
            assert hasattr(getattr(socket, name), "__netguard_original__"), name
    with pytest.raises(netguard.NetworkBlocked):
        socket.gethostbyname("example.org")
    assert socket.gethostbyname("localhost").startswith("127.")


def test_sendmsg_with_an_address_is_guarded():
    recorder = Recorder()
    sendmsg = netguard.guarded(recorder, "sendmsg")
    with pytest.raises(RuntimeError, match="blocked in tests"):
        sendmsg(FakeSocket(socket.AF_INET), [b"x"], [], 0, (BLOCKED_IP, 53))
    assert recorder.calls == []
    sendmsg(FakeSocket(socket.AF_INET), [b"x"])                       # to the connected peer: connect was checked
    sendmsg(FakeSocket(socket.AF_INET), [b"x"], [], 0, ("127.0.0.1", 53))
    sendmsg(FakeSocket(socket.AF_UNIX), [b"x"], [], 0, "/tmp/kernel.sock")
    assert len(recorder.calls) == 3


def test_installed_guard_blocks_sendmsg_on_a_real_socket_without_sending():
    assert "sendmsg" in netguard.GUARDED_METHODS and netguard.installed()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(RuntimeError, match="blocked in tests"):
            sock.sendmsg([b"x"], [], 0, (BLOCKED_IP, 9))


def test_installed_guard_blocks_the_raw__socket_socket_too():
    """``_socket.socket`` is the C class under ``socket.socket``: code that uses it directly is checked the same."""
    import _socket
    sock = _socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for call in (lambda: sock.connect((BLOCKED_IP, 9)), lambda: sock.connect_ex((BLOCKED_IP, 9)),
                     lambda: sock.sendto(b"x", (BLOCKED_IP, 9)), lambda: sock.sendmsg([b"x"], [], 0, (BLOCKED_IP, 9))):
            with pytest.raises(RuntimeError, match="blocked in tests"):
                call()
        sock.sendto(b"x", ("127.0.0.1", 9))  # loopback still works (UDP: nothing needs to listen)
    finally:
        sock.close()
    assert issubclass(_socket.socket, socket.socket.__mro__[1]) and _socket.SocketType is _socket.socket


def test_loopback_and_unix_sockets_still_work_through_the_whole_guard(tmp_path):
    """What JupyterLab and kernels need: a loopback server found by name, and a Unix socket."""
    with socket.create_server(("localhost", 0)) as server:
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5) as client:
            conn, _ = server.accept()
            with conn:
                client.sendall(b"ping")
                assert conn.recv(4) == b"ping"
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            conn, _ = server.accept()
            with conn:
                client.sendmsg([b"pong"])
                assert conn.recv(4) == b"pong"


def test_uninstall_restores_everything_and_install_closes_it_again():
    import _socket
    raw = _socket.socket
    netguard.uninstall()
    try:
        assert not netguard.installed()
        assert not hasattr(_socket.getaddrinfo, "__netguard_original__")
        assert not hasattr(socket.socket.sendmsg, "__netguard_original__")
        assert _socket.socket is not raw and _socket.socket is socket.socket.__mro__[1]
    finally:
        netguard.install()
    assert netguard.installed() and _socket.socket is not socket.socket.__mro__[1]
