"""Exercise notebooks are generated from the solution notebooks, leak no answer, and behave as promised:
every check fails on the untouched stub with its "not implemented yet" message, and passes with the solution."""
import json
import re

import nbformat
import pytest

from helpers.assignments import exercises as ex
from helpers.assignments.grading import Assignment

SOLUTIONS = ex.solution_notebooks()
ids = [p.name.removesuffix("-solutions.ipynb") for p in SOLUTIONS]


def _sources(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells)


def test_every_solution_notebook_has_its_exercise_notebook():
    assert SOLUTIONS, "no solutions/NN-topic-solutions.ipynb found"
    for path in SOLUTIONS:
        assert ex.exercise_path(path).exists(), f"{ex.exercise_path(path)} is missing: run `make exercises`"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_committed_exercise_notebook_is_exactly_what_make_exercises_generates(solution):
    committed = ex.exercise_path(solution).read_text(encoding="utf-8")
    assert committed == ex.dumps(ex.release(ex.read(solution))), "run `make exercises` and commit the result"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_no_marker_and_no_answer_leaks_into_the_exercise_notebook(solution):
    exercise_text = ex.exercise_path(solution).read_text(encoding="utf-8")
    for marker in ex.MARKERS + ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
        assert marker not in exercise_text
    exercise_lines = {line.strip() for line in _sources(ex.read(ex.exercise_path(solution))).split("\n")}
    inside, outside = set(), set()
    for cell in ex.read(solution).cells:
        depth = 0
        for line in cell.source.split("\n"):
            if line.strip() in (ex.BEGIN_SOLUTION, ex.BEGIN_HIDDEN):
                depth += 1
            elif line.strip() in (ex.END_SOLUTION, ex.END_HIDDEN):
                depth -= 1
            elif line.strip():
                (inside if depth else outside).add(line.strip())
    secret = inside - outside
    assert secret, "the solution notebook has no answers between markers"
    leaked = [line for line in secret if line in exercise_lines]
    assert not leaked, f"answer text in the exercise notebook: {leaked}"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_exercise_notebook_is_committed_without_outputs(solution):
    nb = ex.read(ex.exercise_path(solution))
    for cell in nb.cells:
        assert "execution" not in cell.metadata
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_solution_notebook_is_committed_executed_with_the_course_kernel(solution):
    nb = ex.read(solution)
    assert nb.metadata["kernelspec"] == ex.KERNELSPEC
    counts = [cell.execution_count for cell in nb.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "execute it top to bottom in a fresh kernel (make notebooks)"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], f"cell {cell.id} has an error"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_cells_carry_nbgrader_metadata_that_nbgrader_accepts(solution):
    for path in (solution, ex.exercise_path(solution)):
        nb = ex.read(path)
        seen = set()
        answers, checks, texts = set(), set(), set()
        for cell in nb.cells:
            meta = ex.nbgrader_meta(cell)
            if not meta:
                continue
            assert set(meta) >= {"grade", "grade_id", "locked", "schema_version", "solution", "task"}
            assert meta["schema_version"] == 3 and meta["task"] is False
            assert meta["grade_id"] and meta["grade_id"] not in seen
            seen.add(meta["grade_id"])
            if meta["grade"]:
                assert meta["points"] > 0
            else:
                assert "points" not in meta
            # nbgrader's rule: a markdown cell is a solution cell exactly when it is a grade cell
            if cell.cell_type == "markdown":
                assert meta["grade"] == meta["solution"]
            label = ex.exercise_label(meta["grade_id"])
            tags = cell.metadata.get("tags", [])
            if ex.is_check(cell):
                checks.add(label)
                assert meta["locked"]
                assert (ex.RAISES_TAG in tags) == (path != solution), "only the exercise version is tagged"
            elif meta["solution"] and cell.cell_type == "code":
                answers.add(label)
                assert not meta["locked"] and ex.RAISES_TAG not in tags
            else:
                texts.add(label)
        assert answers == checks, "every answer cell has a check cell, and every check an answer"
        assert texts <= answers


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_free_text_cells_carry_the_hand_graded_point_the_introduction_announces_and_the_grader_leaves_out(solution):
    nb = ex.read(solution)
    texts = [ex.nbgrader_meta(c) for c in nb.cells if ex.is_answer(c) and c.cell_type == "markdown"]
    if not texts:
        return
    assert all(meta["points"] == 1 for meta in texts)
    assert "1 point a cell in the nbgrader metadata" in " ".join(nb.cells[0].source.split())
    checked = {}
    for cell in nb.cells:
        if ex.is_check(cell):
            label = ex.exercise_label(ex.nbgrader_meta(cell)["grade_id"])
            checked[label] = checked.get(label, 0) + ex.nbgrader_meta(cell)["points"]
    assert Assignment.from_solutions(solution).max_points == checked


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_stubs_raise_not_implemented_with_the_exercise_number(solution):
    for cell in ex.read(ex.exercise_path(solution)).cells:
        if not ex.is_answer(cell):
            continue
        label = ex.exercise_label(ex.nbgrader_meta(cell)["grade_id"])
        if cell.cell_type == "code":
            assert f'raise NotImplementedError("Exercise {label} is not implemented yet")' in cell.source
            assert ex.CODE_STUB in cell.source
            compile(cell.source, label, "exec")  # the stub is valid Python
        else:
            assert cell.source == ex.TEXT_STUB


# ---------------------------------------------------------------------------------------------------------------
# the generator itself

def test_a_stub_keeps_the_indentation_and_the_code_around_the_answer():
    source = 'def f(x):\n    """doc"""\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n'
    stub = ex.stub_code(source, "3.2")
    assert stub == ('def f(x):\n    """doc"""\n    # YOUR CODE HERE\n'
                    '    raise NotImplementedError("Exercise 3.2 is not implemented yet")\n')


def test_free_text_and_hidden_tests_are_replaced_or_dropped():
    assert ex.stub_markdown("Intro\n### BEGIN SOLUTION\nthe answer\n### END SOLUTION") == "Intro\nYOUR ANSWER HERE"
    assert ex.stub_markdown("a whole answer") == ex.TEXT_STUB
    assert ex.strip_hidden("check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, hidden=True)\n### END HIDDEN TESTS") == \
        "check(f)"


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1",                         # never closed
    "x = 1\n### END SOLUTION",                           # never opened
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION",  # nested
    "x = 1  ### BEGIN SOLUTION\n### END SOLUTION",       # not alone on its line
    "x = 1",                                             # no answer at all
])
def test_a_malformed_answer_cell_is_refused(source):
    with pytest.raises(ValueError):
        ex.stub_code(source, "1.1")


def test_release_refuses_markers_outside_answer_cells_and_leaves_its_input_alone():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    before = json.dumps(nb, sort_keys=True)
    with pytest.raises(ValueError, match="not an nbgrader solution cell"):
        ex.release(nb)
    assert json.dumps(nb, sort_keys=True) == before


def test_exercise_paths_pair_solutions_with_notebooks(tmp_path):
    assert ex.exercise_path(tmp_path / "solutions" / "04-dpo-solutions.ipynb") == \
        tmp_path / "notebooks" / "04-dpo-exercises.ipynb"


# ---------------------------------------------------------------------------------------------------------------
# running them: what nbval cannot prove (it passes a raises-exception cell that does not raise)

@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_the_untouched_exercise_notebook_fails_each_check_with_not_implemented_and_nothing_else(solution):
    path = ex.exercise_path(solution)
    nb = ex.execute(ex.read(path), path.parent, timeout=300, allow_errors=True)
    failed_checks = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if ex.is_check(cell):
            label = ex.exercise_label(ex.nbgrader_meta(cell)["grade_id"])
            assert len(errors) == 1, f"check {label} did not fail on the untouched stub"
            assert errors[0].ename == "AssertionError"
            assert re.match(rf"Exercise {re.escape(label)} is not implemented yet", errors[0].evalue), errors[0].evalue
            failed_checks += 1
        else:
            assert not errors, f"cell {cell.id} fails without the learner's answers: {errors[0].evalue}"
    assert failed_checks > 0


@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_the_solution_notebook_passes_every_check(solution):
    nb = ex.execute(ex.read(solution), solution.parent, timeout=300)  # raises on the first error
    for cell in nb.cells:
        if ex.is_check(cell):
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert "passed" in text or "correct" in text, f"check {cell.id} printed {text!r}"


def test_solutions_only_cells_are_left_out_of_the_exercise_notebook():
    answer = nbformat.v4.new_markdown_cell("## Answers\n\n1. the secret answer")
    answer.metadata["tags"] = [ex.SOLUTIONS_ONLY_TAG]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Lesson"), answer,
                                         nbformat.v4.new_markdown_cell("## Next")])
    released = ex.release(nb)
    assert [c.source for c in released.cells] == ["# Lesson", "## Next"]
    assert "secret" not in json.dumps(released)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=ids)
def test_solution_notebooks_answer_their_lessons_check_your_understanding_questions(solution):
    cells = [c for c in ex.read(solution).cells if ex.SOLUTIONS_ONLY_TAG in c.metadata.get("tags", [])]
    assert cells and "check your understanding" in cells[0].source
