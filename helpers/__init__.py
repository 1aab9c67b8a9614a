"""The course's helpers: the tiny world, the model, and (lesson by lesson) the alignment algorithms.

The layout (README, "Layout"): the world and the model at the bottom, the algorithms the lessons teach above them,
the course machinery (:mod:`helpers.assignments`) and the measurements (:mod:`helpers.bench`) on top.

Notebooks start with ``helpers.require("X.Y")`` so that a notebook and an older installed package cannot drift
apart silently.
"""
from __future__ import annotations

__version__ = "0.1.0"


def require(version: str) -> None:
    """Fail clearly if the installed helpers are older than the notebook expects."""
    have = tuple(int(x) for x in __version__.split("."))
    want = tuple(int(x) for x in version.split("."))
    if have < want:
        raise RuntimeError(f"this notebook needs helpers >= {version}, but {__version__} is installed: run "
                           f"`make setup` (or `pip install -e .`) in the course folder")
    print(f"helpers {__version__} ready")


def load_reference():
    """The course's reference model pi_ref (see :func:`helpers.pretrain.load_reference`)."""
    from .pretrain import load_reference as _load
    return _load()


def __getattr__(name: str):
    """``from helpers import checks``: the exercise checks (:mod:`helpers.assignments.checks`), imported on first use
    so that ``import helpers`` stays light."""
    if name == "checks":
        from .assignments import checks
        return checks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
