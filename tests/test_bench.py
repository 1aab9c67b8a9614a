"""The benchmark's budgets: each issue's target is checked on every ``make bench`` run."""
from helpers import bench


def test_budgets_report_each_figure_a_pattern_covers_with_its_limit_and_verdict():
    results = {"timings_s": {"notebooks": {"01-a": 20.0, "01-a-exercises": 31.0}},
               "dpo": {"malformed": 0.03, "reference_malformed": 0.02, "gap_closed": 0.85}}
    budgets = [("timings_s.notebooks.*", "<=", 90), ("timings_s.notebooks.*-exercises", "<=", 30),
               ("dpo.malformed", "<=", "dpo.reference_malformed"), ("dpo.gap_closed", ">=", 0.80),
               ("ppo.gap_closed", ">=", 0.70)]
    rows = {(r["figure"], r["limit"]): r["met"] for r in bench.check_budgets(results, budgets)}
    assert rows == {("timings_s.notebooks.01-a", 90): True, ("timings_s.notebooks.01-a-exercises", 90): True,
                    ("timings_s.notebooks.01-a-exercises", 30): False,
                    ("dpo.malformed", 0.02): False,            # a limit named by another figure
                    ("dpo.gap_closed", 0.80): True}            # ppo was not measured: no row

