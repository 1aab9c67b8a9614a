"""Session-wide test setup: no test may reach the network (only loopback and Unix sockets; see netguard.py)."""
from __future__ import annotations

import netguard


def pytest_configure(config) -> None:
    netguard.install()


def pytest_unconfigure(config) -> None:
    netguard.uninstall()
