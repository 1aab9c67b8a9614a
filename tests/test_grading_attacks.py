"""The grader's threat model, executable: each attack a careless or cheating student (or a hostile file) tried
against ``python -m helpers grade`` (issue 14), with the points it earns now, and proof that the other students'
grades and the course's files are untouched.

One folder of lesson-01 submissions (15 points each) is graded once, sandboxed, by the module's fixture: two honest
students who solved everything, and one student per attack. Then one test per attack reads the results. Where
bubblewrap cannot run the tests skip, saying why (under CI=true they fail: .ci/run installs it).
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from helpers.assignments import exercises as ex
from helpers.assignments import grading
from test_grading import MAX_POINTS, _submission, require_sandbox

FULL = sum(MAX_POINTS.values())
HONEST = ("honest-alice", "honest-bob")
TOKEN = f"detached-{uuid.uuid4().hex}"  # in the command line of the process the vandal starts
SABOTAGE = f"sabotaged-{uuid.uuid4().hex}"  # what the vandal appends to the course's checks

WRONG = {  # wrong answers for the three function exercises 1.5-1.7 (7 points)
    "ex1_5": "def optimal_policy(ref_probs, rewards, beta):\n"
             "    return torch.softmax(torch.log(ref_probs) + beta * rewards, dim=-1)\n",
    "ex1_6": "def objective(policy_probs, ref_probs, rewards, beta):\n"
             "    return (policy_probs * rewards).sum(-1)\n",
    "ex1_7": "def optimal_objective(ref_probs, rewards, beta):\n"
             "    return torch.logsumexp(torch.log(ref_probs) + rewards / beta, dim=-1)\n",
}
ANSWER_1_1 = "def answer_1_1():\n    return 'B'\n"  # the right letter: 1 point, so an attack cell still defines it


def _hide(path) -> str:
    """A Python expression for ``path`` in which the screen's string rule does not see the word "helpers"."""
    return repr(str(path)).replace("helpers", "hel' + 'pers")


def _through_pickle(code: str) -> str:
    """Answer code that runs ``code`` without any name the static screen blocks: torch.load of a crafted pickle."""
    escaped = code.replace("\\", "\\u005c").replace("\n", "\\u000a")
    return ("import io\n"
            f"payload = b'cbuiltins\\nexec\\n(V' + {escaped!r}.encode() + b'\\ntR.'\n"
            "try:\n"
            "    torch.load(io.BytesIO(payload), weights_only=False)\n"
            "except Exception:\n"
            "    pass\n")


PATCH_CHECKS = ("import sys\n"
                "m = sys.modules['hel' + 'pers.assignments.checks']\n"
                "for n in dir(m):\n"
                "    if n.startswith('check_'):\n"
                "        setattr(m, n, lambda *a, **k: None)\n")


def _attacks(folder: Path, out: Path) -> dict[str, dict]:
    """Student -> the submission, for every attack (the folder and the output folder are known to the attacker)."""
    grades = out / "grades.csv"
    base_py = ex.ROOT / "helpers" / "assignments" / "checks" / "base.py"
    sabotage = f"\nraise AssertionError({SABOTAGE!r})\n"
    detached = (f"import time\ntime.sleep(3)\n"
                f"open({str(grades)!r}, 'w').write('student,exercise,points\\nvandal,1.1,15\\n')\n"
                f"time.sleep(60)  # {TOKEN}\n")
    return {
        # a module alias patched in an answer cell, beside three wrong answers (the static screen sees the alias)
        "alias-patch": _submission(solved="all", replace=dict(WRONG, ex1_5=WRONG["ex1_5"] + (
            "t = torch\nt.allclose = lambda *a, **k: True\n"))),
        # the same patch where the screen cannot see it (through a function's argument): the judge is not fooled
        "argument-patch": _submission(solved="all", replace=dict(WRONG, ex1_5=WRONG["ex1_5"] + (
            "def _patch(m):\n    m.allclose = lambda *a, **k: True\n    m.equal = lambda *a, **k: True\n"
            "_patch(torch)\n"))),
        # a .py file written by an answer and imported, replacing every check_* in the kernel (untouched notebook)
        "module-file-patch": _submission(replace={"ex1_1": ANSWER_1_1 + (
            f"open('grader_patch.py', 'w').write({PATCH_CHECKS!r})\nimport grader_patch\n")}),
        # the same replacement of every check, run through a pickle so that the screen sees nothing
        "pickle-patch": _submission(replace={"ex1_1": ANSWER_1_1 + _through_pickle(PATCH_CHECKS)}),
        # operator.attrgetter to reach the reference without getattr or a dunder
        "attrgetter": _submission(replace={"ex1_5": (
            "from operator import attrgetter\n"
            "def optimal_policy(ref_probs, rewards, beta):\n"
            "    modules = attrgetter('s' + 'ys.modu' + 'les')(torch)\n"
            "    reference = attrgetter('optimal_' + 'policy')(modules['hel' + 'pers.opt' + 'imal'])\n"
            "    return reference(ref_probs, rewards, beta)\n")}),
        # the course root from /proc/self/environ (PYTHONPATH) or its known path, searched for the solutions
        "solutions-finder": _submission(replace={"ex1_5": (
            "def optimal_policy(ref_probs, rewards, beta):\n"
            "    from pathlib import Path\n"
            f"    roots = [{str(ex.ROOT)!r}]\n"
            "    for entry in Path('/proc/self/environ').read_bytes().split(b'\\0'):\n"
            "        if entry.startswith(b'PYTHONPATH='):\n"
            "            roots += entry[len(b'PYTHONPATH='):].decode().split(':')\n"
            "    found = [p for r in roots for d in (Path(r), Path(r).parent) if str(d) != '/' and d.is_dir()\n"
            "             for p in d.glob('*/*solutions.ipynb')]\n"
            "    if found:  # stands for importing the solution's code\n"
            "        return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)\n"
            "    return torch.full_like(ref_probs, 0.5)\n")}),
        # one student reaching out of the notebook: other students' notebooks overwritten and deleted, the output
        # folder written, a failing check appended to the course's own checks (in the course folder and in the
        # sandbox's copy), and a detached process that outlives the grader and rewrites grades.csv
        "vandal": _submission(replace={"ex1_1": ANSWER_1_1 + (
            "from pathlib import Path\n"
            f"for p in list(Path({str(folder)!r}).glob('*.ipynb')) + list(Path({str(out)!r}).glob('**/*')):\n"
            "    if 'vandal' not in p.name:\n"
            "        try:\n"
            "            p.write_text('{}') if p.name.startswith('honest-a') else p.unlink()\n"
            "        except OSError:\n"
            "            pass\n"
            f"for path in ({_hide(base_py)}, {_hide('/course/helpers/assignments/checks/base.py')}):\n"
            "    try:\n"
            "        with open(path, 'a') as f:\n"
            f"            f.write({sabotage!r})\n"
            "    except OSError:\n"
            "        pass\n") + _through_pickle(
            "import subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', {detached!r}], start_new_session=True,\n"
            "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n")}),
        # terminal escapes and control characters in an error message
        "ansi": _submission(solved="all", replace={"ex1_5": (
            "def optimal_policy(ref_probs, rewards, beta):\n"
            "    raise ValueError('\\x1b[31mred\\x1b[0m and a bell\\x07 and \\u202eevil')\n")}),
        # a 5 GB allocation (the limit is 4 GB) before a right answer
        "memory-hog": _submission(solved="all", replace={"ex1_5": (
            "def optimal_policy(ref_probs, rewards, beta):\n"
            "    hog = bytearray(5 * 1024 ** 3)\n"
            "    return torch.softmax(torch.log(ref_probs) + rewards / beta, dim=-1)\n")}),
    }


def _fingerprint(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _course_sabotaged() -> bool:
    """Whether the vandal's line is in any of the course's Python files (other engineers may edit them meanwhile,
    so the files are searched for it rather than compared byte for byte)."""
    return any(SABOTAGE in p.read_text(errors="replace") for p in (ex.ROOT / "helpers").rglob("*.py"))


def _processes_with(token: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every attack beside two honest students, once: (points per student, feedback, folders, facts)."""
    require_sandbox()
    tmp = tmp_path_factory.mktemp("attacks")
    folder, out = tmp / "submissions", tmp / "results"
    folder.mkdir()
    solved = _submission(solved="all")
    notebooks = {name: json.dumps(solved) for name in HONEST}
    notebooks.update({name: json.dumps(nb) for name, nb in _attacks(folder, out).items()})
    for name, text in notebooks.items():
        (folder / f"{name}.ipynb").write_text(text)
    # any file name, any notebook format: a name that is not UTF-8, nbformat 3, a byte-order mark
    (Path(os.fsdecode(bytes(folder) + b"/\xff\xfe bad;name.ipynb"))).write_text(json.dumps(solved))
    v3 = nbformat.convert(nbformat.reads(json.dumps(solved), as_version=4), 3)
    (folder / "format-three.ipynb").write_text(nbformat.writes(v3, version=3))
    (folder / "byte-order-mark.ipynb").write_bytes(codecs.BOM_UTF8 + json.dumps(solved).encode())
    honest_files = _fingerprint(folder / f"{name}.ipynb" for name in HONEST)
    solutions_before = _fingerprint(ex.solution_notebooks())
    grading.grade_folder(folder, out, timeout=120, workers=2, log=lambda *a: None)
    survivors = _processes_with(TOKEN)
    csv_after_grading = (out / "grades.csv").read_text()
    time.sleep(5)  # the detached process would have rewritten grades.csv by now
    rows = [line.split(",") for line in (out / "grades.csv").read_text().splitlines()[1:]]
    points: dict[str, float] = {}
    for row in rows:
        points[row[0]] = points.get(row[0], 0.0) + float(row[2])
    feedback = {p.stem: p.read_text() for p in (out / "feedback").glob("*.txt")}
    return {"points": points, "feedback": feedback, "csv": (out / "grades.csv").read_text(),
            "csv_after_grading": csv_after_grading, "survivors": survivors,
            "honest_files_unchanged": honest_files == _fingerprint(folder / f"{name}.ipynb" for name in HONEST),
            "course_unchanged": not _course_sabotaged() and solutions_before == _fingerprint(ex.solution_notebooks())}


def _assert_others_unharmed(graded) -> None:
    assert all(graded["points"][name] == FULL for name in HONEST), graded["points"]
    assert graded["honest_files_unchanged"], "an attack changed another student's notebook"
    assert graded["course_unchanged"], "an attack changed the course's files"


pytestmark = pytest.mark.slow


def test_a_module_alias_patched_in_an_answer_earns_nothing_for_the_wrong_answers(graded):
    assert graded["points"]["alias-patch"] == FULL - 7  # was 15: three wrong answers passed
    assert "changes an attribute of t" in graded["feedback"]["alias-patch"]
    _assert_others_unharmed(graded)


def test_patching_torch_where_the_screen_cannot_see_it_does_not_fool_the_judge(graded):
    assert graded["points"]["argument-patch"] == FULL - 7
    assert "looks like you used exp(beta * r)" in graded["feedback"]["argument-patch"]
    _assert_others_unharmed(graded)


def test_a_module_written_and_imported_by_an_answer_cannot_replace_the_checks(graded):
    assert graded["points"]["module-file-patch"] == 0  # was 15 on an untouched notebook
    assert "not an installed package" in graded["feedback"]["module-file-patch"]
    _assert_others_unharmed(graded)


def test_replacing_the_checks_inside_the_kernel_earns_only_what_the_answers_deserve(graded):
    assert graded["points"]["pickle-patch"] == 0  # was 15: the checks "passed" on an untouched notebook
    assert "did not run in the notebook" in graded["feedback"]["pickle-patch"]
    _assert_others_unharmed(graded)


def test_operator_attrgetter_does_not_reach_the_reference(graded):
    assert graded["points"]["attrgetter"] == 0  # was 3
    assert "it imports from operator" in graded["feedback"]["attrgetter"]
    _assert_others_unharmed(graded)


def test_the_solutions_cannot_be_found_from_inside_the_sandbox(graded):
    assert graded["points"]["solutions-finder"] == 0  # was 3: the course root came from /proc/self/environ
    _assert_others_unharmed(graded)


def test_another_students_notebook_and_the_output_folder_are_out_of_reach(graded):
    assert graded["points"]["vandal"] == 1  # answer_1_1 is right; was: victims 15 -> 0
    _assert_others_unharmed(graded)


def test_the_course_files_cannot_be_changed_by_an_answer(graded):
    assert not _course_sabotaged()  # was: three honest students 15 -> 9, and the change persisted
    _assert_others_unharmed(graded)


def test_a_detached_process_dies_with_its_sandbox_and_cannot_rewrite_the_grades(graded):
    assert graded["survivors"] == [], "a process started by an answer outlived the grader"
    assert graded["csv"] == graded["csv_after_grading"]
    assert graded["points"]["vandal"] == 1  # was 15 after the rewrite
    _assert_others_unharmed(graded)


def test_a_file_name_that_is_not_utf8_is_graded_under_a_safe_name_and_reported(graded):
    assert graded["points"]["bad_name"] == FULL  # was: UnicodeEncodeError, no grade for anyone
    assert "file name '\\xff\\xfe bad;name' graded as 'bad_name'" in graded["csv"]
    _assert_others_unharmed(graded)


def test_nbformat_3_and_byte_order_mark_notebooks_are_read(graded):
    assert graded["points"]["format-three"] == FULL  # was 0
    assert graded["points"]["byte-order-mark"] == FULL  # was 0
    assert "upgraded to nbformat 4" in graded["csv"] and "byte-order mark" in graded["csv"]


def test_feedback_carries_no_terminal_escapes_or_control_characters(graded):
    text = graded["feedback"]["ansi"]
    assert graded["points"]["ansi"] == FULL - 3
    assert "red and a bell and evil" in text
    assert not any(c in text for c in "\x1b\x07\u202e")


def test_memory_is_capped_and_the_kernel_survives(graded):
    assert graded["points"]["memory-hog"] == FULL - 3  # was: a 3 GB allocation succeeded
    assert "MemoryError" in graded["feedback"]["memory-hog"]
    _assert_others_unharmed(graded)


# ---------------------------------------------------------------------------------------------------------------
# no sandbox: refused unless asked for, and then said in the CSV

def test_grading_refuses_without_a_working_sandbox(tmp_path, monkeypatch):
    (tmp_path / "x.ipynb").write_text("{}")
    monkeypatch.setattr(grading.sandbox, "problem", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SystemExit, match="refusing to grade.*--no-sandbox"):
        grading.grade_folder(tmp_path, log=lambda *a: None)


def test_a_bwrap_that_is_installed_but_fails_is_detected(tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert "installed but fails here (bwrap: No permissions" in grading.sandbox.problem()


def test_grading_without_a_sandbox_says_so_in_the_csv(tmp_path):
    (tmp_path / "frank.ipynb").write_text('{"cells": [')  # not even JSON: graded without running a kernel
    grading.grade_folder(tmp_path, sandboxed=False, assignment_name="01-alignment-problem", log=lambda *a: None)
    rows = (tmp_path / "grades.csv").read_text().splitlines()
    assert rows[0] == "student,exercise,points,max_points,notes"
    assert all(row.endswith("graded without a sandbox (--no-sandbox)") for row in rows[1:])
