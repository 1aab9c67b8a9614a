"""The tour of helpers: every equation in the table is quoted from its function's docstring, and points at it."""
import inspect

import pytest

from helpers import equations


@pytest.mark.parametrize("eq", equations.EQUATIONS, ids=lambda e: e.what)
def test_each_formula_is_quoted_from_its_functions_docstring(eq):
    doc = " ".join((inspect.getdoc(equations.resolve(eq)) or "").split())
    assert " ".join(eq.formula.split()) in doc, f"{eq.function}'s docstring no longer holds {eq.formula!r}"


def test_the_table_points_at_each_function_definition():
    rows = equations.table()
    assert {r["lesson"] for r in rows} == {"02", "03", "04", "05"}
    for r in rows:
        source = open(r["module"].replace("helpers/", equations.__file__.rsplit("/", 1)[0] + "/")).read().splitlines()
        assert f"def {r['function'].split('.')[-1]}(" in source[r["line"] - 1]


def test_a_formula_that_drifted_fails_the_check():
    drifted = equations.Equation("04", "DPO loss", "loss = -log sigma(h / beta)", "dpo:dpo_loss")
    doc = " ".join(inspect.getdoc(equations.resolve(drifted)).split())
    assert drifted.formula not in doc


def test_markdown_has_one_row_per_equation():
    assert equations.markdown().count("\n") == 1 + len(equations.EQUATIONS)
