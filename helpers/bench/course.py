"""``timings_s.notebooks.*`` and ``grading.*``: the course machinery, measured. Every notebook's fresh-kernel run
time, and the grader's time and verdicts on a folder of solved and untouched submissions."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ..assignments import exercises as ex
from ..assignments.grading import Assignment, grade_folder
from .reference import timed


def bench_notebooks() -> dict:
    """``timings_s.notebooks.<stem>``: a fresh-kernel run of every notebook in notebooks/ and solutions/.

    Exercise notebooks run unsolved, so their checks fail as designed (errors are allowed there, nowhere else).
    Kernels use one torch thread, as under `make test`: two threads on a machine shared with other jobs made
    sampling several times slower, and far less repeatable.
    """
    env = ex.kernel_env(threads=1)
    out, failed = {}, {}
    for path in sorted(ex.NOTEBOOKS_DIR.glob("*.ipynb")) + sorted(ex.SOLUTIONS_DIR.glob("*.ipynb")):
        unsolved = path.name.endswith("-exercises.ipynb")
        start = time.perf_counter()
        try:
            ex.execute(ex.read(path), path.parent, allow_errors=unsolved, env=env)
        except Exception as e:  # report it and time the others; a failing notebook is also a failing test
            failed[path.stem] = f"{type(e).__name__} after {time.perf_counter() - start:.0f} s"
            continue
        out[path.stem] = time.perf_counter() - start
    return {"timings_s": {"notebooks": out}} | ({"notebooks": {"failed": failed}} if failed else {})


def bench_grading(copies: int = 20) -> dict:
    """``grading.seconds_20``: grade ``copies`` exercise notebooks (half solved, half untouched) with the course's
    grader (2 at a time, 120 s limit each); ``grading.correct_scores``: every copy got exactly its expected score."""
    solution = ex.solution_notebooks()[0]
    assignment = Assignment.from_solutions(solution)
    released = ex.read(ex.exercise_path(solution))
    solved = ex.with_answers(released, ex.read(solution))
    full = sum(assignment.max_points.values())
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as folder:
        expected = {}
        for i in range(copies):
            name = f"{'solved' if i % 2 == 0 else 'untouched'}-{i:02d}"
            ex.write(solved if i % 2 == 0 else released, Path(folder) / f"{name}.ipynb")
            expected[name] = full if i % 2 == 0 else 0.0
        results, seconds = timed(lambda: grade_folder(Path(folder), timeout=120, workers=2, log=lambda *a: None))
    correct = all(sum(r.points.values()) == expected[r.student] for r in results) and len(results) == copies
    return {"grading": {f"seconds_{copies}": seconds, "correct_scores": correct, "max_points": full}}
