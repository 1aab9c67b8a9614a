"""tests/iopub_guard.py: the limits are JupyterLab's, the replay drops exactly what JupyterLab's server drops, and
under nbval the guard fails a cell that floods IOPub or writes to stderr (and only that cell)."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest
from jupyter_server.services.kernels.connection import channels

import iopub_guard

ROOT = Path(__file__).resolve().parents[1]


def test_the_limits_are_the_installed_jupyter_servers_defaults():
    server = channels.ZMQChannelsWebsocketConnection
    assert server.limit_rate.default_value is True
    assert server.iopub_msg_rate_limit.default_value == iopub_guard.MSG_RATE_LIMIT == 1000
    assert server.iopub_data_rate_limit.default_value == iopub_guard.DATA_RATE_LIMIT == 1_000_000
    assert server.rate_limit_window.default_value == iopub_guard.WINDOW == 3
    source = inspect.getsource(server._limit_rate)
    assert '{"status", "comm_open", "execute_input"}' in source  # what the server leaves uncounted
    assert '"execution_state") == "idle"' in source  # an idle kernel empties the window


# ----------------------------------------------------------------------------------------------------------------
# the replay against jupyter_server's own rate limiter, on the same messages at the same times

def message(t: float, msg_type: str = "comm_msg", **content) -> dict:
    return {"header": {"msg_type": msg_type, "date": datetime.fromtimestamp(1e9 + t, timezone.utc)},
            "parent_header": {}, "metadata": {}, "content": content}


class Clock:
    now = 0.0

    def time(self) -> float:
        return self.now


def server_drops(messages: list[dict], monkeypatch) -> int:
    """How many of ``messages`` jupyter_server's ``_limit_rate`` would not send to the browser."""
    warnings = []

    class Limiter(channels.ZMQChannelsWebsocketConnection):
        def write_stderr(self, error_message, parent_header):
            warnings.append(error_message)

    clock = Clock()
    monkeypatch.setattr(channels, "IOLoop", type("Loop", (), {"current": staticmethod(lambda: clock)}))
    limiter, dropped = Limiter(), 0
    for msg in messages:
        clock.now = msg["header"]["date"].timestamp()
        header = {k: v for k, v in msg["header"].items() if k != "date"}
        # the parts the server measures a stream message by: what the replay estimates it from
        parts = [json.dumps(part, default=str).encode() for part in
                 (msg["header"], msg["parent_header"], msg["metadata"], msg["content"])]
        dropped += bool(limiter._limit_rate("iopub", {**msg, "header": header}, parts))  # None: not counted
    assert bool(warnings) == bool(dropped)
    return dropped


def burst(n: int, seconds: float, start: float = 0.0, msg_type: str = "comm_msg", **content) -> list[dict]:
    return [message(start + seconds * i / n, msg_type, **content) for i in range(n)]


IDLE = [message(0.0, "status", execution_state="idle")]
STREAMS = {
    "3000 messages in 3 s: at the limit": burst(3000, 2.99),
    "3001 messages in 3 s: over it": burst(3001, 2.99),
    "900 messages/s for 10 s": burst(9000, 10.0),
    "1100 messages/s for 4 s": burst(4400, 4.0),
    "two bursts of 2000 with an idle between": burst(2000, 1.0) + [message(1.0, "status", execution_state="idle")]
    + burst(2000, 1.0, start=1.0),
    "two bursts of 2000 without": burst(2000, 1.0) + burst(2000, 1.0, start=1.0),
    "5000 comm_open and status messages (uncounted)": burst(2500, 1.0, msg_type="comm_open")
    + burst(2500, 1.0, msg_type="status", execution_state="busy"),
    "3 MB of stdout in 2 s": burst(300, 2.0, msg_type="stream", name="stdout", text="x" * 10_000),
    "2.4 MB of stdout in 2 s": burst(240, 2.0, msg_type="stream", name="stdout", text="x" * 10_000),
}


@pytest.mark.parametrize("name", STREAMS)
def test_the_replay_fails_exactly_what_jupyter_server_drops(name, monkeypatch):
    messages = STREAMS[name]
    traffic = iopub_guard.replay(messages)
    dropped = server_drops(messages, monkeypatch)
    assert bool(traffic.problems(headroom=1.0)) == (dropped > 0), (name, traffic, dropped)


def test_the_guard_fails_at_half_the_limit_and_collects_stderr():
    assert not iopub_guard.replay(burst(1500, 2.99)).problems()
    assert "1501 IOPub messages within 3 s" in iopub_guard.replay(burst(1501, 2.99)).problems()[0]
    traffic = iopub_guard.replay([message(0.0, "stream", name="stdout", text="fine\n"),
                                  message(0.1, "stream", name="stderr", text="UserWarning: careful\n")])
    assert traffic.stderr == "UserWarning: careful\n"
    assert "wrote to stderr" in traffic.problems()[0]


# ----------------------------------------------------------------------------------------------------------------
# the guard under nbval, on a notebook that floods

# one comm message per change, as the labeling widget sent per label before the fix; the pause keeps the kernel's
# IOPub socket from dropping messages itself (its high-water mark), which would hang nbval instead
FLOOD = """\
import time
import ipywidgets as widgets
counter = widgets.IntText()
for i in range(3500):
    counter.value = i
    if i % 2:
        time.sleep(0.001)
"""


@pytest.mark.slow
def test_the_guard_fails_a_flooding_cell_and_a_cell_writing_to_stderr_under_nbval(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "print('quiet')", "import warnings\nwarnings.warn('a deprecated thing')", FLOOD,
        "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.05)")]
    nbformat.write(nb, tmp_path / "flood.ipynb")
    # a separate pytest on this notebook alone: the guard loaded as a plugin, nbval as make test runs it
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "iopub_guard", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", "-q", "-rf", "--color=no", "--rootdir", str(tmp_path), "flood.ipynb"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"),
                                                                      os.environ.get("PYTHONPATH", "")])),
        capture_output=True, text=True, timeout=240)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    # the quiet cells pass (the last one, after the flood, may be marked xfail if nbval timed out on the flood)
    failed = sorted(line.split("::")[1].split(" - ")[0] for line in out.splitlines() if line.startswith("FAILED"))
    assert failed == ["Cell 1", "Cell 2"], out
    assert "wrote to stderr" in out and "a deprecated thing" in out, out
    assert "IOPub messages within 3 s" in out and "IOPub message rate exceeded" in out, out
    assert "busiest flood.ipynb::Cell 2" in out or "(nbval: Timeout" in out, out


def test_the_guard_is_installed_for_this_run(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin(iopub_guard.PLUGIN)
