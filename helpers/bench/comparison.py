"""``make bench`` section for lesson 05's controlled comparison: ``comparison.*``.

The sweeps take minutes, so ``make artifacts`` runs them once into ``helpers/artifacts/comparison.json``
(:func:`helpers.comparison.build_comparison`); this section reports the committed full run under the benchmark
contract's keys (``comparison.<method>.{gold_reward, kl, gap_closed, fraction_of_optimum, train_s, ...}`` for
best_of_n, ppo, dpo, grpo, rloo), whether every point lies on or below the exact frontier, and reruns the live
slice (:func:`helpers.comparison.run_live`) to check that it reproduces the committed one, as the lesson asserts.
"""
from __future__ import annotations

from ..comparison import differences, load_comparison, run_live, summary


def bench_comparison() -> dict:
    """{"comparison": {method: {...}, "points_below_frontier", "build_s", "live_reproduces_committed", ...}}."""
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
    fresh = run_live(log=lambda _: None)
    diffs = differences(committed["live"], fresh, atol=1e-5, rtol=1e-5)
    out["live_reproduces_committed"] = not diffs
    out["live_differences"] = diffs[:10]
    out["live_s"] = fresh["seconds"]
    return {"comparison": out}
