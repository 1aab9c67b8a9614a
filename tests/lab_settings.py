"""The options `make lab` gives JupyterLab (the course's own Lab settings, lab/overrides.json), read from the
Makefile through `make -n`, so the tests start JupyterLab exactly as learners do. Used by test_setup.py and
test_labeling_browser.py."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_lab_options() -> list[str]:
    """The words after ``jupyter lab notebooks/`` in the command `make lab` runs (without LAB_ARGS); raises
    FileNotFoundError when make is not installed."""
    if shutil.which("make") is None:
        raise FileNotFoundError("make is not installed (the course needs it: `make lab`, `make test`)")
    # a make that runs the tests passes its jobserver in MAKEFLAGS; a sub-make must not inherit it.
    # -o: never print the set-up commands, even when the stamp is older than pyproject.toml
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    result = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "lab", "LAB_ARGS="], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    line = next(line for line in result.stdout.splitlines() if "jupyter lab notebooks/" in line)
    words = shlex.split(line)
    return words[words.index("notebooks/") + 1:]
