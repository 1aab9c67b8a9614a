"""The grader scores what the answers deserve, whatever else a submission does: deleted checks, calls to the
reference implementation, broken files and infinite loops cost that student, never the grader run."""
import copy
import json
import os
import time

import pytest

from helpers.assignments import exercises as ex
from helpers.assignments import grading, sandbox

SOLUTION = ex.SOLUTIONS_DIR / "01-alignment-problem-solutions.ipynb"
EXERCISE = ex.exercise_path(SOLUTION)
MAX_POINTS = {"1.1": 1, "1.2": 1, "1.3": 1, "1.4": 2, "1.5": 3, "1.6": 3, "1.7": 1, "1.8": 1, "1.9": 1, "1.10": 1}


# ---------------------------------------------------------------------------------------------------------------
# the static screen: which answers reach the course's implementation

FLAGGED = {
    "the course's batching": "from helpers.tokenizer import Tokenizer, pad_sequences\ndef preference_batch(pairs):\n    return pad_sequences([[1], [2, 3]], 0)",
    "attribute": "def optimal_policy(ref_probs, rewards, beta):\n"
                 "    return helpers.optimal.optimal_policy(ref_probs, rewards, beta)",
    "from import": "from helpers.optimal import optimal_policy",
    "from import, renamed": "from helpers.evaluate import wilson_interval as w\n\ndef failure_rate(l, f):\n    return w",
    "import the package": "import helpers.world as w",
    "import the module": "from helpers import optimal",
    "__import__": "m = __import__('helpers.optimal', fromlist=['x'])",
    "importlib": "import importlib\nm = importlib.import_module('helpers.' + 'optimal')",
    "getattr": "f = getattr(world, 'optimal_policy')",
    "sys.modules": "import sys\nf = sys.modules['helpers.optimal']",
    "through torch.sys": "f = torch.sys.modules",
    "a frame's globals": "g = (x for x in [1]).gi_frame.f_globals",
    "function globals": "f = sample_responses.__globals__",
    "eval": "f = eval('hel' + 'pers')",
    "rebinding checks": "checks = None",
    "patching the checks": "def f():\n    pass\nchecks.check_objective = f",
    "patching torch": "torch.allclose = lambda *a, **k: True",
    "patching torch through an alias": "t = torch\nt.allclose = lambda *a, **k: True",
    "patching torch through an alias of an alias": "a, b = torch, 1\nc = a\nc.allclose = print",
    "patching torch through a default argument": "def f(t=torch):\n    t.allclose = print\nf()",
    "operator.attrgetter": "from operator import attrgetter\nf = attrgetter('optim' + 'al_policy')",
    "operator.methodcaller": "import operator\nf = operator.methodcaller('x')",
    "a module the answer wrote": "open('patch.py', 'w').write('x = 1')\nimport patch",
    "a string naming the reference": "name = 'wilson_interval'",
    "a shell escape": "!cat ../helpers/optimal.py",
    "a magic": "%run -i ../helpers/optimal.py",
}

ALLOWED = {
    "the answer": "def optimal_policy(ref_probs, rewards, beta):\n"
                  '    """pi* over the last dimension (mentions helpers in a docstring)."""\n'
                  "    return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)",
    "its own helper, called optimal": "def f(x):\n    optimal = x * 2\n    return optimal",
    "a multiple-choice answer": "def answer_1_1():\n    return 'B'",
    "the world": "from helpers import world\nimport math\nx = math.sqrt(2)",
    "attributes of its own objects": "def f(model):\n    for p in model.parameters():\n        p.requires_grad = False",
    "torch's KL": "kl = torch.distributions.kl_divergence",
    "attributes of a tensor it made": "x = torch.zeros(3)\nx.requires_grad = True",
    "not even Python": "def f(:\n",
}


@pytest.mark.parametrize("code", FLAGGED.values(), ids=FLAGGED.keys())
def test_answers_that_reach_the_reference_or_the_checks_are_flagged(code):
    assert grading.reference_use(code)


@pytest.mark.parametrize("code", ALLOWED.values(), ids=ALLOWED.keys())
def test_ordinary_answers_are_not_flagged(code):
    assert grading.reference_use(code) is None


# ---------------------------------------------------------------------------------------------------------------
# grading a folder of submissions

def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_sandbox() -> None:
    """Skip (with the reason) where bubblewrap cannot run; under CI=true fail instead, as .ci/run installs it."""
    why = sandbox.problem()
    if why:
        (pytest.fail if _ci() else pytest.skip)(f"the grader's sandbox cannot run here: {why}")


def _answers() -> dict[str, str]:
    return ex.answers(ex.read(SOLUTION))


def _submission(solved=(), replace=None, checks=None) -> dict:
    """The released notebook with the solution's answers for the exercises in ``solved`` (labels, or "all"),
    answer sources replaced by ``replace`` (grade_id -> code), and check cells deleted or edited by ``checks``."""
    nb = json.loads(EXERCISE.read_text())
    answers = _answers()
    cells = []
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        grade_id = meta.get("grade_id", "")
        if meta.get("solution") and (solved == "all" or ex.exercise_label(grade_id) in solved):
            cell["source"] = answers[grade_id]
        if replace and grade_id in replace:
            cell["source"] = replace[grade_id]
        if checks and meta.get("grade") and not meta.get("solution"):
            if checks == "delete" or (checks == "mixed" and ex.exercise_label(grade_id) in ("1.1", "1.5", "1.9")):
                continue
            cell["source"] = "pass"
        cells.append(cell)
    nb["cells"] = cells
    return nb


CHEATING = {
    "ex1_5": "def optimal_policy(ref_probs, rewards, beta):\n"
             "    return helpers.optimal.optimal_policy(ref_probs, rewards, beta)",
    "ex1_7": "def optimal_objective(ref_probs, rewards, beta):\n"
             "    module = __import__('helpers.optimal', fromlist=['optimal_objective'])\n"
             "    return module.optimal_objective(ref_probs, rewards, beta)",
}


def _expected_csv(points: dict[str, dict[str, float]]) -> str:
    rows = ["student,exercise,points,max_points,notes"]
    for student in sorted(points):
        for label, best in MAX_POINTS.items():
            rows.append(f"{student},{label},{points[student].get(label, 0):g},{best},")
    return "\n".join(rows) + "\n"


def _grade(folder, notebooks: dict, timeout: float) -> float:
    require_sandbox()
    folder.mkdir()
    for name, nb in notebooks.items():
        (folder / f"{name}.ipynb").write_text(nb if isinstance(nb, str) else json.dumps(nb))
    start = time.monotonic()
    grading.grade_folder(folder, timeout=timeout, workers=2, log=lambda *a: None)
    return time.monotonic() - start


def _feedback(folder) -> dict[str, str]:
    return {p.stem: p.read_text() for p in (folder / "feedback").glob("*.txt")}


@pytest.mark.slow
def test_grading_scores_what_the_answers_deserve_whatever_the_rest_of_the_notebook_says(tmp_path):
    folder = tmp_path / "submissions"
    _grade(folder, {
        "alice": _submission(solved="all"),                                 # everything right
        "bob": _submission(),                                                # handed in untouched
        "carol": _submission(solved=("1.1", "1.4", "1.5"), checks="mixed"),  # checks deleted or made `pass`
        "dave": _submission(solved="all", replace=CHEATING),                 # calls the reference for 1.5 and 1.7
        "frank": '{"cells": [{"cell_type": "code", "source": "oops"',        # not even JSON
    }, timeout=120)
    expected = {
        "alice": dict(MAX_POINTS),
        "bob": {},
        "carol": {"1.1": 1, "1.4": 2, "1.5": 3},
        "dave": {k: v for k, v in MAX_POINTS.items() if k not in ("1.5", "1.7")},
        "frank": {},
    }
    assert (folder / "grades.csv").read_text() == _expected_csv(expected)
    feedback = _feedback(folder)
    assert set(feedback) == set(expected)
    assert feedback["alice"].startswith("alice: 15 / 15 points")
    assert "[1.1]" in feedback["alice"] and "[1.1]" not in feedback["bob"]  # free text is passed on, stubs are not
    assert "Exercise 1.5 is not implemented yet" in feedback["bob"]
    assert "optimal_policy from the course's implementation" in feedback["dave"]
    assert "__import__" in feedback["dave"]
    assert "not a valid notebook" in feedback["frank"]


@pytest.mark.slow
def test_an_endless_answer_costs_its_student_and_stops_at_the_time_limit(tmp_path):
    folder = tmp_path / "submissions"
    elapsed = _grade(folder, {
        "erin": _submission(solved="all", replace={"ex1_1": "while True:\n    pass"}),  # hangs in its first answer
        "gus": _submission(),                                                         # graded beside it
    }, timeout=20)
    assert (folder / "grades.csv").read_text() == _expected_csv({"erin": {}, "gus": {}})
    assert "time limit of 20 s" in _feedback(folder)["erin"]
    assert elapsed < 20 + grading.GRACE_S, f"grading took {elapsed:.0f} s"


def test_an_assignment_knows_its_exercises_and_points():
    assignment = grading.Assignment.from_solutions(SOLUTION)
    assert assignment.name == "01-alignment-problem"
    assert assignment.max_points == MAX_POINTS
    released = assignment.notebook
    assert ex.BEGIN_SOLUTION not in released and ex.BEGIN_HIDDEN not in released
    assert "hidden=True" in released  # the grader keeps the hidden cases the learner's notebook does not have
    assert "hidden=True" not in EXERCISE.read_text()


def test_answers_are_taken_by_grade_id_and_nothing_else():
    nb = _submission(solved="all")
    nb["cells"].insert(0, copy.deepcopy(nb["cells"][-1]) | {"source": "print('extra cell')", "metadata": {}})
    answers = grading._answers(nb)
    assert set(answers) == set(_answers())
    assert all("extra cell" not in source for _, source in answers.values())


def test_every_course_check_cell_is_judged_outside_the_notebook():
    """Every check cell of every lesson is only calls like ``checks.check_x(answer, hidden=True)``, which the judge
    replays in the grader's process; a cell of another form would fall back to the notebook's own (forgeable) status."""
    for solution in ex.solution_notebooks():
        nb = ex.release(ex.read(solution), keep_hidden=True)
        for cell in nb.cells:
            if ex.is_check(cell):
                assert grading._check_calls(cell.source), (solution.name, cell.source)
