"""``make bench`` section for lesson 05's controlled comparison: ``comparison.*``.

The sweeps take minutes, so ``make artifacts`` runs them once into ``helpers/artifacts/comparison.json``
(:func:`helpers.comparison.build_comparison`); this section reports the committed full run under the benchmark
contract's keys (``comparison.<method>.{gold_reward, kl, gap_closed, fraction_of_optimum, train_s, ...}`` for
best_of_n, ppo, dpo, grpo, rloo), whether every point lies on or below the exact frontier, and reruns the short
setting to check that it reproduces the committed short run (what the lesson asserts live).
"""
from __future__ import annotations

from ..comparison import differences, load_comparison, run_comparison, summary


def bench_comparison() -> dict:
    """{"comparison": {method: {...}, "points_below_frontier", "build_s", "short_reproduces_committed", ...}}."""
    committed = load_comparison(None)
    out: dict = {}
    if "full" in committed:
        full = committed["full"]
        out |= summary(full)
        out["points_below_frontier"] = full["frontier_check"]["all_below"]
        out["frontier_max_excess"] = full["frontier_check"]["max_excess"]
        out["build_s"] = full["seconds"]
    else:
        out["full_missing"] = "no full run in the committed comparison: run `python -m helpers build comparison`"
    fresh = run_comparison("short", log=lambda _: None)
    diffs = differences(committed["short"], fresh)
    out["short_reproduces_committed"] = not diffs
    out["short_differences"] = diffs[:10]
    out["short_s"] = fresh["seconds"]
    return {"comparison": out}
