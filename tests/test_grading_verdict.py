"""The grader's verdict is the checks' own: every check test (tests/test_checks*.py: right answers, realistic wrong
answers, stubs) run again with each check recorded to JSON and judged from that record alone, as the grader judges
a notebook outside its kernel (``HELPERS_CHECK_ROUNDTRIP``, see helpers/assignments/checks/base.py). Same passes,
same failures, same named mistakes."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.mark.slow
def test_every_check_judges_a_recorded_run_as_it_judges_the_live_one():
    env = dict(os.environ, HELPERS_CHECK_ROUNDTRIP="1", HELPERS_QUIET="1", OMP_NUM_THREADS="1")
    files = sorted(str(p) for p in TESTS.glob("test_checks*.py"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", *files],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
