"""Shared by the tests of the exercise checks: run a check on a wrong answer and read what it says."""
import pytest


def fails(check, answer, words, **kw):
    """Run ``check(answer, **kw)``, which must fail; every one of ``words`` must be in its message (any case).
    Returns the message, lower-cased."""
    with pytest.raises(AssertionError) as err:
        check(answer, **kw)
    message = str(err.value).lower()
    assert all(w.lower() in message for w in words), message
    return message
