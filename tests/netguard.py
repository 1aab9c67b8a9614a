"""No network in tests: a guard on ``socket.socket`` that lets only loopback and Unix-socket addresses through.

The course promises to run offline, so a test that reaches the network is a bug. ``tests/conftest.py`` installs
the guard for the whole pytest session; ``tests/test_network_guard.py`` proves it works without sending a packet.

- ``check_address(family, address)`` raises :class:`NetworkBlocked` unless ``address`` is loopback
  (127.0.0.0/8, ::1, "localhost") or a Unix-socket path. It resolves no host name: any name but "localhost" is
  blocked as it stands.
- ``guarded(method)`` wraps a ``socket.socket`` method (``connect``, ``connect_ex``, ``sendto``) so that it checks
  the address before it calls the original; ``install()`` / ``uninstall()`` patch and restore ``socket.socket``.
  ``socket.create_connection`` and everything built on it (urllib, http.client, asyncio) go through ``connect``.

Kernels started by nbval or the grader are separate processes: ``kernel_guard/sitecustomize.py`` installs the
same guard in them (conftest.py puts it on their PYTHONPATH).
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from typing import Any, Callable

LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})
GUARDED_METHODS = ("connect", "connect_ex", "sendto")

_originals: dict[str, Callable[..., Any]] = {}


class NetworkBlocked(RuntimeError):
    """A test tried to reach an address that is not on this machine."""


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
    """``method`` of ``socket.socket`` with the address checked first; the address is the last argument."""
    @functools.wraps(method)
    def wrapper(sock: socket.socket, *args: Any) -> Any:
        # connect(address), connect_ex(address), sendto(data, address), sendto(data, flags, address)
        if name != "sendto" or len(args) >= 2:
            check_address(sock.family, args[-1] if args else None)
        return method(sock, *args)
    wrapper.__netguard_original__ = method  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Patch ``socket.socket`` so that every guarded method checks its address (idempotent)."""
    for name in GUARDED_METHODS:
        if name not in _originals:
            _originals[name] = getattr(socket.socket, name)
            setattr(socket.socket, name, guarded(_originals[name], name))


def uninstall() -> None:
    """Restore the original ``socket.socket`` methods."""
    while _originals:
        name, method = _originals.popitem()
        setattr(socket.socket, name, method)


def installed() -> bool:
    return all(hasattr(getattr(socket.socket, name), "__netguard_original__") for name in GUARDED_METHODS)
