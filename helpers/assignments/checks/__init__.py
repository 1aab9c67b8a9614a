"""Checks for the exercise notebooks: run a learner's answer on several cases against the course's reference and,
when it is wrong, say which known mistake the result matches.

Every check passes silently but for one printed line, or raises ``AssertionError`` whose first line names the mistake
("looks like you used exp(beta * r) instead of exp(r / beta)"), followed by the case that showed it. A stub that
still raises ``NotImplementedError`` fails with "... is not implemented yet". Tolerances are stated per check:

- probabilities: absolute error <= ``ATOL_PROBS`` (1e-5: float32 arithmetic is accurate to about 1e-7 here);
- objective values (rewards and KL in nats): absolute error <= ``ATOL_VALUE`` + ``RTOL_VALUE`` * |expected|;
- rates and interval bounds: absolute error <= ``ATOL_RATE`` (1e-5).

Inputs are float32 tensors (what :func:`helpers.enumerable.load_view` gives); expected values are computed in
float64. Each check also accepts ``hidden=True``, which adds randomised cases: the grader runs them, the learner's
check cell does not. tests/test_checks*.py feed every check the reference and realistic wrong answers.

One module per lesson, all names re-exported here (notebooks call ``checks.check_...``):
- :mod:`.base`: the shared machinery and the multiple-choice questions (``QUESTIONS``, ``check_choice``);
- :mod:`.alignment`: lesson 01; :mod:`.reward`: lesson 02; :mod:`.ppo` and :mod:`.rlhf`: lesson 03;
  :mod:`.dpo`: lesson 04; :mod:`.implementation`: lesson 06.
"""
from .base import (ATOL_PROBS, ATOL_RATE, ATOL_VALUE, NOT_IMPLEMENTED_HELP, QUESTIONS, RTOL_VALUE, Z95,  # noqa: F401
                   Question, check_choice)
from .alignment import *  # noqa: F401,F403
from .reward import *  # noqa: F401,F403
from .dpo import *  # noqa: F401,F403
from .ppo import *  # noqa: F401,F403
from .rlhf import *  # noqa: F401,F403
from .choosing import *  # noqa: F401,F403
from .implementation import *  # noqa: F401,F403

from .base import graded as _graded

# every check as the notebooks call it: recorded for the grader's judge when it runs the notebook (see base)
for _name, _check in list(globals().items()):
    if _name.startswith("check_") and callable(_check):
        globals()[_name] = _graded(_check)
del _name, _check
