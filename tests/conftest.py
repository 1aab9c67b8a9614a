"""Session-wide test setup: no test may reach the network (only loopback and Unix sockets; see netguard.py), and no
notebook cell may flood JupyterLab's IOPub channel or write to stderr (see iopub_guard.py).

The network guard is installed in this process, and — through ``kernel_guard/sitecustomize.py`` on PYTHONPATH — in
every Python process the tests start, notebook kernels included.
"""
from __future__ import annotations

import os
from pathlib import Path

import iopub_guard
import netguard
import pytest
import torch

TESTS = Path(__file__).resolve().parent


def pytest_configure(config) -> None:
    netguard.install()
    iopub_guard.install(config)
    paths = [str(TESTS / "kernel_guard"), str(TESTS)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    os.environ["COURSE_NETGUARD"] = "1"


def pytest_unconfigure(config) -> None:
    netguard.uninstall()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one torch thread, and do not fight other processes for the two cores.
    Use it in a module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
