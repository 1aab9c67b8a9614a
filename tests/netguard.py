"""No network in tests: a guard on sockets and name lookups that lets only loopback and Unix-socket traffic through.

The course promises to run offline, so a test that reaches the network is a bug. ``tests/conftest.py`` installs
the guard for the whole pytest session; ``tests/test_network_guard.py`` proves it works without sending a packet.

- ``check_address(family, address)`` raises :class:`NetworkBlocked` unless ``address`` is loopback
  (127.0.0.0/8, ::1, "localhost") or a Unix-socket path. It resolves no host name: any name but "localhost" is
  blocked as it stands.
- ``guarded(method)`` wraps a ``socket.socket`` method (``connect``, ``connect_ex``, ``sendto``, ``sendmsg``) so
  that it checks the address before it calls the original; ``install()`` / ``uninstall()`` patch and restore
  ``socket.socket``, and put a guarded subclass in place of the C class ``_socket.socket`` (for code that skips the
  ``socket`` module). ``socket.create_connection`` and everything built on it (urllib, http.client, asyncio) go
  through ``connect``.
- ``guarded_resolver(function)`` wraps a name lookup (``getaddrinfo``, ``gethostbyname``, ...): a lookup sends a DNS
  query before any connect, so a name other than "localhost" is refused before the lookup, with
  :class:`ResolutionBlocked` (also a ``socket.gaierror``, so code that copes with being offline copes with it).
  Numeric addresses and no host at all send no query and pass. Both ``_socket`` and ``socket`` are patched.

What it cannot close: code that kept a reference to an original before ``install()`` ran, C extensions with their
own sockets (ZeroMQ's, which the kernels use on loopback), and subprocesses that are not Python.

Kernels started by nbval or the grader are separate processes: ``kernel_guard/sitecustomize.py`` installs the
same guard in them (conftest.py puts it on their PYTHONPATH).
"""
from __future__ import annotations

import _socket
import functools
import ipaddress
import socket
from typing import Any, Callable

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
GUARDED_METHODS = tuple(m for m in ("connect", "connect_ex", "sendto", "sendmsg") if hasattr(socket.socket, m))
RESOLVERS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo")

_originals: dict[str, Callable[..., Any]] = {}      # socket.socket's methods, by name
_restore: list[tuple[object, str, Any]] = []        # everything else patched: (module, name, original)


class NetworkBlocked(RuntimeError):
    """A test tried to reach an address that is not on this machine."""


class ResolutionBlocked(NetworkBlocked, socket.gaierror):
    """A test tried to look up a host name (a DNS query); a ``socket.gaierror`` too, like a lookup offline."""


def is_loopback_host(host: object) -> bool:
    """Whether ``host`` (an IP address string or a name) surely means this machine; resolves nothing."""
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a host name (or garbage): never resolved, so never trusted
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def check_address(family: int, address: object) -> None:
    """Raise :class:`NetworkBlocked` unless ``address`` (of socket ``family``) is loopback or a Unix socket."""
    if family == getattr(socket, "AF_UNIX", object()):
        return  # a path on this machine (or Linux's abstract namespace)
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        if is_loopback_host(address[0]):
            return
    raise NetworkBlocked(f"network access to {address!r} is blocked in tests: the course must run offline "
                         f"(only loopback and Unix sockets are allowed; see tests/netguard.py)")


def guarded(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``method`` of ``socket.socket`` with the address checked first, when the call names one."""
    @functools.wraps(method)
    def wrapper(sock: socket.socket, *args: Any) -> Any:
        # connect(address), connect_ex(address), sendto(data, address), sendto(data, flags, address),
        # sendmsg(buffers, ancdata, flags, address); a sendmsg without an address goes to the connected peer
        if name in ("connect", "connect_ex") or (name == "sendto" and len(args) >= 2):
            check_address(sock.family, args[-1] if args else None)
        elif name == "sendmsg" and len(args) >= 4:
            check_address(sock.family, args[3])
        return method(sock, *args)
    wrapper.__netguard_original__ = method  # type: ignore[attr-defined]
    return wrapper


def _sends_no_query(host: object) -> bool:
    """Whether looking ``host`` up stays on this machine: no host, a loopback name, or a numeric address."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host == "" or is_loopback_host(host):
        return True
    try:
        ipaddress.ip_address(host.split("%")[0] if isinstance(host, str) else host)  # "fe80::1%eth0" too
    except ValueError:
        return False
    return True


def guarded_resolver(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The name lookup ``function`` (one of :data:`RESOLVERS`) refusing any lookup that would send a query."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        host = args[0] if args else kwargs.get("host")
        if name == "getnameinfo":  # getnameinfo(sockaddr, flags): a reverse lookup unless asked for numbers
            numeric = len(args) > 1 and args[1] & socket.NI_NUMERICHOST
            allowed = numeric or (isinstance(host, tuple) and host and is_loopback_host(host[0]))
        elif name == "gethostbyaddr":  # a reverse lookup: even a numeric address sends a query
            allowed = is_loopback_host(host)
        else:
            allowed = _sends_no_query(host)
        if not allowed:
            raise ResolutionBlocked(f"looking up {host!r} ({name}) is blocked in tests: it sends a DNS query and "
                                    f"the course must run offline (see tests/netguard.py)")
        return function(*args, **kwargs)
    wrapper.__netguard_original__ = function  # type: ignore[attr-defined]
    return wrapper


def _guarded_raw_socket(raw: type) -> type:
    """A subclass of the C class ``_socket.socket`` with the same guarded methods (no ``__init__`` of its own:
    ``socket.socket.__init__`` calls ``_socket.socket.__init__`` on instances of the original class)."""
    methods = {name: guarded(getattr(raw, name), name) for name in GUARDED_METHODS}
    return type("socket", (raw,), {"__slots__": (), "__module__": "_socket", "__netguard_original__": raw,
                                   **methods})


def _patch(module: object, name: str, value: Any) -> None:
    _restore.append((module, name, getattr(module, name)))
    setattr(module, name, value)


def install() -> None:
    """Guard ``socket.socket``, ``_socket.socket`` and the name lookups of ``_socket`` and ``socket``
    (idempotent)."""
    for name in GUARDED_METHODS:
        if name not in _originals:
            _originals[name] = getattr(socket.socket, name)
            setattr(socket.socket, name, guarded(_originals[name], name))
    if _restore:
        return
    for name in RESOLVERS:
        original = getattr(_socket, name)
        _patch(_socket, name, guarded_resolver(original, name))
        if getattr(socket, name) is original:  # not socket.getaddrinfo: it is Python code calling _socket's
            _patch(socket, name, getattr(_socket, name))
    raw = _guarded_raw_socket(_socket.socket)
    _patch(_socket, "socket", raw)
    _patch(_socket, "SocketType", raw)


def uninstall() -> None:
    """Restore everything :func:`install` patched."""
    while _originals:
        name, method = _originals.popitem()
        setattr(socket.socket, name, method)
    while _restore:
        module, name, original = _restore.pop()
        setattr(module, name, original)


def installed() -> bool:
    return (all(hasattr(getattr(socket.socket, name), "__netguard_original__") for name in GUARDED_METHODS)
            and all(hasattr(getattr(_socket, name), "__netguard_original__") for name in RESOLVERS)
            and hasattr(_socket.socket, "__netguard_original__"))
