"""The sandbox each submission runs in while it is graded: bubblewrap (``bwrap``), with a memory limit.

Inside it a notebook sees only what it needs, read-only: the system's programs and libraries (``/usr``), the Python
installation and virtual environment the grader runs in, and a copy of the ``helpers`` package at ``/course``. It
gets its own empty ``/tmp``, its own folder for what it writes (``/grade/out``), no network (a network namespace of
its own, with loopback only), no other process (a PID namespace of its own: when the sandbox ends, every process
started in it ends too, detached or not), a cleared environment, and an address-space limit (``RLIMIT_AS``,
4 GB by default). The course folder, ``solutions/``, the other submissions, the output folder and the grader's own
files are not there at all.

:func:`problem` runs a trivial command through bwrap first, so that a bwrap that is missing *or* refused by the
system (some distributions block unprivileged user namespaces) is found before anything is graded.
Used by :mod:`.grading`.
"""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_MEMORY_BYTES = 4 * 1024 ** 3  # the address-space limit of a graded notebook (torch imports in ~1.5 GB)
INSTALL_HINT = ("install bubblewrap (Debian and Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install "
                "bubblewrap`), or grade inside a disposable container or VM and pass --no-sandbox")
COURSE = "/course"      # where helpers/ appears inside the sandbox
IN, OUT = "/grade/in", "/grade/out"  # the notebook to run (read-only) and the folder for what the run writes
# the few system files a Python process reads; everything else in /etc stays out (nothing secret goes in)
ETC_FILES = ("ld.so.cache", "ld.so.conf", "nsswitch.conf", "passwd", "group", "localtime", "hosts")


def _python_roots() -> list[str]:
    """The folders the grader's Python lives in (the interpreter's installation and the virtual environment)."""
    roots = []
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))):
        real = os.path.realpath(p)
        if real.endswith("/bin"):
            real = os.path.dirname(real)
        roots.append(real)
        if os.path.realpath(p) != p:
            roots.append(p)
    # keep the outermost of nested roots, in order
    out = []
    for r in sorted(set(roots), key=len):
        if not any(r == o or r.startswith(o + "/") for o in out) and r != "/":
            out.append(r)
    return out


def command(argv: list[str], helpers_dir: Path, in_dir: Path, out_dir: Path) -> list[str]:
    """``argv`` wrapped in bwrap: see the module docstring for what the sandbox holds."""
    # --unshare-all: its own network (loopback only), PID, IPC, UTS and cgroup namespaces; --die-with-parent: killing
    # the grader's process kills the sandbox; --new-session: no way back into the grader's terminal
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ETC_FILES:
        cmd += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # the private /tmp first, then the binds: a course (and its .venv) that lives under /tmp stays visible
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for root in _python_roots():
        cmd += ["--ro-bind", root, root]
    cmd += ["--ro-bind", str(helpers_dir), f"{COURSE}/helpers", "--ro-bind", str(in_dir), IN,
            "--bind", str(out_dir), OUT, "--chdir", "/tmp", "--clearenv"]
    env = {"HOME": "/tmp", "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin", "PYTHONPATH": COURSE,
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "MPLBACKEND": "agg", "MPLCONFIGDIR": "/tmp/mpl",
           "JUPYTER_RUNTIME_DIR": "/tmp/jupyter", "JUPYTER_CONFIG_DIR": "/tmp/jupyter-config",
           "IPYTHONDIR": "/tmp/ipython"}
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--"] + argv


def limit_memory(max_bytes: int | None):
    """A ``preexec_fn`` that caps the address space of the process it starts (and so of all its children)."""
    def apply():
        if max_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))
    return apply


def problem(timeout: float = 30) -> str | None:
    """Why bwrap cannot sandbox a notebook here (missing, or refused by the system), or None when it works."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    helpers_dir = Path(__file__).resolve().parents[1]
    try:
        with tempfile.TemporaryDirectory(prefix="bwrap-probe-") as tmp:  # bound as in a real run
            done = subprocess.run(command([sys.executable, "-c", "import helpers"], helpers_dir, Path(tmp), Path(tmp)),
                                  capture_output=True, timeout=timeout, text=True, errors="replace")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap (bwrap) does not run here ({type(e).__name__}: {e}): {INSTALL_HINT}"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        return f"bubblewrap (bwrap) is installed but fails here ({why}): {INSTALL_HINT}"
    return None
