"""Fails a notebook cell, where nbval already runs it, whose output real JupyterLab would lose or show in red.

JupyterLab's server stops forwarding a kernel's IOPub messages to the browser ("IOPub message rate exceeded") once
more than ``iopub_msg_rate_limit`` x ``rate_limit_window`` of them (1,000 messages/s over 3 s, jupyter_server's
``ZMQChannelsWebsocketConnection`` defaults) arrive within one window, or more than ``iopub_data_rate_limit`` x
``rate_limit_window`` bytes of stream output (1,000,000 bytes/s); until the rate falls, the cell's output is lost.
nbval reads the kernel's messages directly and never notices. So while nbval runs a cell, this plugin records every
IOPub message its kernel client receives and replays them through the server's own accounting
(``_limit_rate`` in jupyter_server/services/kernels/connection/channels.py: status, comm_open and execute_input
are not counted, stream messages count their bytes, an idle status empties the window), with each message at the
time the kernel stamped it. It also fails a cell that writes to stderr (a warning, a progress bar left on), which
JupyterLab shows on a red background.

The test machine is shared and slower than a learner's laptop, where the same cell sends the same messages in less
time, so a cell fails at ``1 / HEADROOM`` of the server's limits. Each checked cell's peak rate goes into its report
(``iopub_peak_msgs_per_s``), and the busiest cell is named in the terminal summary.

Installed by ``tests/conftest.py``: ``iopub_guard.install(config)``; nothing runs a notebook twice.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

import pytest

# jupyter_server 2's defaults (ZMQChannelsWebsocketConnection); tests/test_iopub_guard.py checks them against
# the installed server, so an upgrade that changes them fails there first
MSG_RATE_LIMIT = 1000.0      # messages per second, averaged over the window
DATA_RATE_LIMIT = 1_000_000  # bytes of stream messages per second, averaged over the window
WINDOW = 3.0                 # seconds
UNCOUNTED = frozenset({"status", "comm_open", "execute_input"})  # the server does not count these
HEADROOM = 2.0               # fail at half the server's limits: a learner's machine may run the cell faster
PLUGIN = "iopub-guard"       # the name the guard is registered under


@dataclass
class CellTraffic:
    """What one cell sent on IOPub, replayed through JupyterLab's rate limiter."""
    messages: int = 0           # messages the server would count
    peak_messages: int = 0      # most counted messages inside one window
    peak_bytes: int = 0         # most stream bytes inside one window
    stderr: str = ""            # everything the cell wrote to stderr

    @property
    def peak_msgs_per_s(self) -> float:
        return self.peak_messages / WINDOW

    def problems(self, headroom: float = HEADROOM, stderr: bool = True) -> list[str]:
        """Why JupyterLab would not show this cell's output as it is (leaving stderr out if not ``stderr``): an
        empty list when it would."""
        found = []
        if self.peak_messages / WINDOW > MSG_RATE_LIMIT / headroom:
            found.append(f"it sent {self.peak_messages} IOPub messages within {WINDOW:g} s "
                         f"({self.peak_msgs_per_s:.0f} messages/s); JupyterLab drops a cell's output above "
                         f"{MSG_RATE_LIMIT:.0f} messages/s (\"IOPub message rate exceeded\"), and this test fails "
                         f"above {MSG_RATE_LIMIT / headroom:.0f}/s because a learner's machine may run it faster")
        if self.peak_bytes / WINDOW > DATA_RATE_LIMIT / headroom:
            found.append(f"it wrote {self.peak_bytes} bytes of stream output within {WINDOW:g} s; JupyterLab drops "
                         f"output above {DATA_RATE_LIMIT} bytes/s (\"IOPub data rate exceeded\"), and this test "
                         f"fails above {DATA_RATE_LIMIT / headroom:.0f}/s")
        if stderr and self.stderr:
            text = self.stderr if len(self.stderr) <= 1500 else self.stderr[:1500] + " [...]"
            found.append(f"it wrote to stderr, which JupyterLab shows in red:\n{text}")
        return found


def _stream_bytes(msg: dict) -> int:
    """About what the server counts for a stream message: the length of its serialized parts."""
    parts = (msg.get("header", {}), msg.get("parent_header", {}), msg.get("metadata", {}), msg.get("content", {}))
    return sum(len(json.dumps(part, default=str)) for part in parts)


def replay(messages: list[dict]) -> CellTraffic:
    """Account for ``messages`` (jupyter_client message dicts, in arrival order) as jupyter_server's ``_limit_rate``
    does, at the times the kernel stamped them (``header["date"]``)."""
    traffic = CellTraffic()
    window: deque[tuple[float, int]] = deque()  # (time counted, bytes) of the messages inside the window
    in_window = 0
    for msg in messages:
        msg_type = msg["header"]["msg_type"]
        content = msg.get("content", {})
        if msg_type == "status" and content.get("execution_state") == "idle":
            window.clear()
            in_window = 0
        if msg_type == "stream" and content.get("name") == "stderr":
            traffic.stderr += content.get("text", "")
        if msg_type in UNCOUNTED:
            continue
        now = msg["header"]["date"].timestamp()
        while window and now >= window[0][0] + WINDOW:
            in_window -= window.popleft()[1]
        size = _stream_bytes(msg) if msg_type == "stream" else 0
        window.append((now, size))
        in_window += size
        traffic.messages += 1
        traffic.peak_messages = max(traffic.peak_messages, len(window))
        traffic.peak_bytes = max(traffic.peak_bytes, in_window)
    return traffic


class IOPubGuard:
    """The pytest plugin: wraps each nbval cell's run, records its kernel's IOPub messages, and fails the cell
    when :meth:`CellTraffic.problems` finds any."""

    def __init__(self) -> None:
        self.busiest: tuple[float, str] | None = None
        self.cells = 0

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        kernel = getattr(getattr(item, "parent", None), "kernel", None)
        if type(item).__name__ != "IPyNbCell" or kernel is None:
            return (yield)
        seen: list[dict] = []
        get_message = kernel.get_message

        def recording_get_message(stream, timeout=None):
            msg = get_message(stream, timeout=timeout)
            if stream == "iopub":
                seen.append(msg)
            return msg

        kernel.get_message = recording_get_message
        try:
            result = yield
        except Exception as error:
            # a flood can also make nbval itself fail: it reads IOPub only after the cell has run, the kernel's
            # socket drops what no longer fits, and nbval times out waiting for output. Say why, if so.
            if replay(seen).problems(stderr=False):
                raise self._failure(item, replay(seen), f"\n(nbval: {error})") from error
            raise
        finally:
            del kernel.get_message  # the instance attribute goes; the class's method is back
        traffic = replay(seen)
        item.user_properties.append(("iopub_peak_msgs_per_s", round(traffic.peak_msgs_per_s, 1)))
        if traffic.problems():
            raise self._failure(item, traffic)
        return result

    @staticmethod
    def _failure(item, traffic: CellTraffic, also: str = "") -> Exception:
        from nbval.plugin import NbCellError
        return NbCellError(item.cell_num, "JupyterLab would not show this cell's output as nbval saw it: "
                           + "; and ".join(traffic.problems()) + also, item.cell.source)

    def pytest_runtest_logreport(self, report) -> None:
        # reports carry user_properties from xdist workers too, so the summary sees every cell
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == "iopub_peak_msgs_per_s":
                self.cells += 1
                if self.busiest is None or value > self.busiest[0]:
                    self.busiest = (value, report.nodeid)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.busiest is not None:
            rate, nodeid = self.busiest
            terminalreporter.write_line(
                f"iopub guard: {self.cells} notebook cells checked; busiest {nodeid} at {rate:.0f} messages/s "
                f"(fails above {MSG_RATE_LIMIT / HEADROOM:.0f}/s; JupyterLab's limit is {MSG_RATE_LIMIT:.0f}/s)")


def install(config) -> None:
    """Register the guard for every notebook cell in this pytest run."""
    if not config.pluginmanager.has_plugin(PLUGIN):
        config.pluginmanager.register(IOPubGuard(), PLUGIN)


def pytest_configure(config) -> None:
    """Lets ``pytest -p iopub_guard`` load the guard without this folder's conftest (tests/test_iopub_guard.py)."""
    install(config)
