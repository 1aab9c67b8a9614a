"""Progress bars that show in a terminal and in JupyterLab, and stay quiet under tests (HELPERS_QUIET=1)."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, desc: str = "", total: int | None = None):
    """Wrap ``iterable`` in a progress bar unless the environment variable HELPERS_QUIET is set."""
    disable = os.environ.get("HELPERS_QUIET", "") not in ("", "0")
    return tqdm(iterable, desc=desc, total=total, disable=disable, leave=False)
