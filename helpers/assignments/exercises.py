"""Exercise notebooks from one source: ``solutions/NN-topic-solutions.ipynb`` -> ``notebooks/NN-topic-exercises.ipynb``.

The solution notebook is the only place an exercise is written. Answers sit between nbgrader's markers::

    ### BEGIN SOLUTION
    ...the answer...
    ### END SOLUTION

and :func:`release` turns it into the exercise notebook a learner gets:

- in a code answer cell each marked region becomes ``# YOUR CODE HERE`` and
  ``raise NotImplementedError("Exercise 1.5 is not implemented yet")`` (the number comes from the cell's
  ``grade_id``, ``ex1_5`` -> 1.5), indented like the region;
- a free-text answer (a markdown cell) becomes ``YOUR ANSWER HERE``;
- ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` regions of check cells are dropped (the grader keeps them);
- check cells (nbgrader ``grade`` code cells) get the ``raises-exception`` tag, so that nbval accepts the
  unsolved notebook;
- cells tagged ``grader-skip`` (demonstrations that no answer or check depends on) stay; the grader skips them;
- cells tagged ``solutions-only`` (answers to the lesson's "check your understanding" questions) are dropped;
- outputs, execution counts and execution metadata are removed.

Every cell keeps its nbgrader metadata (``{"nbgrader": {"grade", "grade_id", "locked", "points",
"schema_version": 3, "solution", "task"}}``), so nbgrader can use the notebooks as they are.

This module also executes notebooks with nbclient (``make notebooks``, the tests, the bench and the grader).
Used by ``python -m helpers exercises`` and ``python -m helpers grade``.
"""
from __future__ import annotations

import copy
import os
import re
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]  # the course folder (helpers/assignments/ -> course root)
SOLUTIONS_DIR = ROOT / "solutions"
NOTEBOOKS_DIR = ROOT / "notebooks"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MARKERS = (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN)
TEXT_STUB = "YOUR ANSWER HERE"
CODE_STUB = "# YOUR CODE HERE"
RAISES_TAG = "raises-exception"
GRADER_SKIP_TAG = "grader-skip"  # a demonstration cell the grader need not run (no answer or check depends on it)
SOLUTIONS_ONLY_TAG = "solutions-only"  # a cell that stays in the solution notebook only
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}

_GRADE_ID = re.compile(r"^ex(\d+)_(\d+)")


# ----------------------------------------------------------------------------------------------------------------
# cells and their nbgrader metadata

def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata ({} for an ordinary cell)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta if isinstance(meta, dict) else {}


def is_answer(cell) -> bool:
    """An answer cell: what the learner writes (nbgrader ``solution``)."""
    return bool(nbgrader_meta(cell).get("solution"))


def is_check(cell) -> bool:
    """A check cell: code whose points count when it runs without error (nbgrader ``grade``, not a solution)."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def exercise_label(grade_id: str) -> str:
    """The exercise a cell belongs to, from its grade_id: ``ex1_5`` and ``ex1_5_check`` -> ``1.5``."""
    m = _GRADE_ID.match(grade_id or "")
    if not m:
        raise ValueError(f"grade_id {grade_id!r} does not name an exercise (expected ex<section>_<number>...)")
    return f"{int(m.group(1))}.{int(m.group(2))}"


def exercise_path(solution_path: Path) -> Path:
    """``solutions/NN-topic-solutions.ipynb`` -> ``notebooks/NN-topic-exercises.ipynb`` (beside solutions/)."""
    solution_path = Path(solution_path)
    stem = solution_path.name.removesuffix("-solutions.ipynb")
    if stem == solution_path.name:
        raise ValueError(f"{solution_path} is not named NN-topic-solutions.ipynb")
    return solution_path.parent.parent / "notebooks" / f"{stem}-exercises.ipynb"


def solution_notebooks(root: Path = ROOT) -> list[Path]:
    """Every ``solutions/NN-*-solutions.ipynb``, sorted."""
    return sorted(Path(root, "solutions").glob("[0-9][0-9]-*-solutions.ipynb"))


def lesson_notebooks(root: Path = ROOT) -> list[Path]:
    """Every lesson notebook in notebooks/ (everything but the generated ``*-exercises.ipynb``), sorted."""
    return sorted(p for p in Path(root, "notebooks").glob("*.ipynb") if not p.name.endswith("-exercises.ipynb"))


# ----------------------------------------------------------------------------------------------------------------
# turning answers into stubs

def _regions(lines: list[str], begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """(start, stop) line indices of each begin/end pair; raise on unbalanced or nested markers."""
    out, start = [], None
    for i, line in enumerate(lines):
        text = line.strip()
        if text == begin:
            if start is not None:
                raise ValueError(f"{where}: nested {begin!r} on line {i + 1}")
            start = i
        elif text == end:
            if start is None:
                raise ValueError(f"{where}: {end!r} without {begin!r} on line {i + 1}")
            out.append((start, i))
            start = None
        elif begin in line or end in line:
            raise ValueError(f"{where}: a marker must be alone on its line (line {i + 1}: {line!r})")
    if start is not None:
        raise ValueError(f"{where}: {begin!r} on line {start + 1} is never closed")
    return out


def stub_code(source: str, exercise: str, where: str = "cell") -> str:
    """Replace each solution region of a code cell by a stub that raises NotImplementedError."""
    lines = source.split("\n")
    regions = _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where)
    if not regions:
        raise ValueError(f"{where}: an answer cell needs a {BEGIN_SOLUTION} / {END_SOLUTION} region")
    for start, stop in reversed(regions):
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        lines[start:stop + 1] = [f"{indent}{CODE_STUB}",
                                 f'{indent}raise NotImplementedError("Exercise {exercise} is not implemented yet")']
    return "\n".join(lines)


def stub_markdown(source: str, where: str = "cell") -> str:
    """Replace each solution region of a markdown cell (or, without markers, the whole cell) by YOUR ANSWER HERE."""
    lines = source.split("\n")
    regions = _regions(lines, BEGIN_SOLUTION, END_SOLUTION, where)
    if not regions:
        return TEXT_STUB
    for start, stop in reversed(regions):
        lines[start:stop + 1] = [TEXT_STUB]
    return "\n".join(lines)


def strip_hidden(source: str, where: str = "cell") -> str:
    """Drop the hidden-test regions (markers included) of a check cell."""
    lines = source.split("\n")
    for start, stop in reversed(_regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)):
        del lines[start:stop + 1]
    return "\n".join(lines).rstrip("\n")


def _unmark_hidden(source: str, where: str) -> str:
    """Keep the hidden tests but drop their marker lines (what the grader runs)."""
    lines = source.split("\n")
    _regions(lines, BEGIN_HIDDEN, END_HIDDEN, where)  # validates
    return "\n".join(line for line in lines if line.strip() not in (BEGIN_HIDDEN, END_HIDDEN))


def release(solutions: nbformat.NotebookNode, keep_hidden: bool = False) -> nbformat.NotebookNode:
    """The exercise notebook made from a solution notebook (see the module docstring).

    Args:
        solutions: the solution notebook (it is not modified).
        keep_hidden: keep the hidden tests of check cells (without their markers): the grader's copy.
    Returns:
        a new notebook without outputs.
    """
    nb = copy.deepcopy(solutions)
    nb.cells = [c for c in nb.cells if SOLUTIONS_ONLY_TAG not in c.metadata.get("tags", [])]
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        where = f"cell {i} ({cell.get('id', '?')})"
        meta = nbgrader_meta(cell)
        if meta:
            grade_id = meta.get("grade_id", "")
            if grade_id in seen:
                raise ValueError(f"{where}: duplicate grade_id {grade_id!r}")
            seen.add(grade_id)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        if is_answer(cell):
            if cell.cell_type == "code":
                cell.source = stub_code(cell.source, exercise_label(meta.get("grade_id", "")), where)
            else:
                cell.source = stub_markdown(cell.source, where)
        else:
            if any(m in cell.source for m in (BEGIN_SOLUTION, END_SOLUTION)):
                raise ValueError(f"{where}: solution markers in a cell that is not an nbgrader solution cell")
            if any(m in cell.source for m in (BEGIN_HIDDEN, END_HIDDEN)):
                if not is_check(cell):
                    raise ValueError(f"{where}: hidden-test markers outside a check cell")
                cell.source = _unmark_hidden(cell.source, where) if keep_hidden else strip_hidden(cell.source, where)
        if meta and GRADER_SKIP_TAG in cell.metadata.get("tags", []):
            raise ValueError(f"{where}: an answer or check cell cannot be tagged {GRADER_SKIP_TAG!r}")
        if is_check(cell):
            tags = list(cell.metadata.get("tags", []))
            if RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
            cell.metadata["tags"] = tags
    return nb


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def dumps(nb: nbformat.NotebookNode) -> str:
    """The notebook as the JSON text the repository stores (nbformat's layout, one trailing newline)."""
    return nbformat.writes(nb).rstrip("\n") + "\n"


def write(nb: nbformat.NotebookNode, path: Path) -> bool:
    """Write ``nb`` to ``path`` if its text differs; return whether the file changed."""
    text = dumps(nb)
    path = Path(path)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def generate(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Regenerate every ``notebooks/NN-*-exercises.ipynb`` from its ``solutions/NN-*-solutions.ipynb``.

    Args:
        root: the course folder.
        check: write nothing; return the exercise notebooks that are missing or differ.
    Returns:
        the exercise notebooks that were written (or, with ``check``, that are out of date).
    """
    changed = []
    for src in solution_notebooks(root):
        dst = exercise_path(src)
        nb = release(read(src))
        if check:
            if not dst.exists() or dst.read_text(encoding="utf-8") != dumps(nb):
                changed.append(dst)
        elif write(nb, dst):
            changed.append(dst)
    return changed


# ----------------------------------------------------------------------------------------------------------------
# running notebooks

def kernel_env(threads: int | None = None) -> dict[str, str]:
    """The environment notebooks run in: the caller's, with progress bars off (and optionally fewer threads)."""
    env = dict(os.environ, HELPERS_QUIET="1")
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def execute(nb: nbformat.NotebookNode, cwd: Path, timeout: float = 600, allow_errors: bool = False,
            env: dict | None = None) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` in a fresh kernel started in ``cwd``; return the executed notebook.

    ``timeout`` is per cell. Execution timestamps are not recorded, so re-running a notebook changes only what its
    cells print.
    """
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    client = NotebookClient(nb, timeout=int(timeout), kernel_name="python3", allow_errors=allow_errors,
                            record_timing=False, shutdown_kernel="immediate",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env or kernel_env())
    return nb


def execute_in_place(path: Path, timeout: float = 600) -> float:
    """Re-execute a lesson or solution notebook where it lies (cwd = its folder); return the seconds it took."""
    path = Path(path)
    nb = read(path)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    start = time.perf_counter()
    nb = execute(nb, path.parent, timeout)
    seconds = time.perf_counter() - start
    write(nb, path)
    return seconds


def answers(solutions: nbformat.NotebookNode) -> dict[str, str]:
    """grade_id -> the solution's answer cell, as a student who solved it would hand it in (free text without the
    markers; code keeps them, as nbgrader's solutions do). Used by the bench and the tests."""
    out = {}
    for cell in solutions.cells:
        if is_answer(cell):
            source = cell.source
            if cell.cell_type == "markdown":
                source = "\n".join(line for line in source.split("\n") if line.strip() not in MARKERS)
            out[nbgrader_meta(cell)["grade_id"]] = source
    return out


def with_answers(released: nbformat.NotebookNode, solutions: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The released notebook with every answer cell filled in from the solutions."""
    solved = answers(solutions)
    nb = copy.deepcopy(released)
    for cell in nb.cells:
        if is_answer(cell):
            cell.source = solved[nbgrader_meta(cell)["grade_id"]]
    return nb
