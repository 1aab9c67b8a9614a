"""``make bench`` section for lesson 05's verifiable rewards: ``verifiable.*``.

The runs take minutes, so ``make artifacts`` computes them once (:func:`helpers.rlvr.build_verifiable`); this
section reports the committed figures (exact false-answer rates on the answerable prompts: practised, held-out
test, the reference sampled colder, the control) and reruns the live slice, as the lesson does, to check that it
reproduces the committed one.
"""
from __future__ import annotations

from .. import rlvr
from ..comparison import differences
from ..pretrain import load_reference


def bench_verifiable() -> dict:
    """{"verifiable": {practised_false_cut, test_false_cut_at_chosen, ..., live_reproduces_committed}}."""
    runs = rlvr.load_verifiable()
    main, control = runs["runs"]["grpo"], runs["runs"]["control"]
    at = {c["iteration"]: c for c in main["checks"]}
    chosen = main["chosen"]
    temps = runs["temperatures"]
    cold = str(min(rlvr.TEMPERATURES))
    out = {
        "practised_false_cut": max(rlvr.false_answer_cut(r, "practised", c["iteration"])
                                   for r in (main, runs["runs"]["grpo_seed1"]) for c in r["checks"][1:]),
        "practised_false_cut_at_chosen": rlvr.false_answer_cut(main, "practised", chosen),
        "chosen_iteration": chosen,
        "test_false_reference": at[0]["test"]["wrong"],
        "test_false_at_chosen": at[chosen]["test"]["wrong"],
        "test_false_cut_at_chosen": rlvr.false_answer_cut(main, "test", chosen),
        f"test_false_reference_temperature_{cold}": temps[cold]["wrong"],
        "control_practised_false_cut": max(rlvr.false_answer_cut(control, "practised", c["iteration"])
                                           for c in control["checks"][1:]),
        "pass_at_chosen": {where: at[chosen][f"{where}_pass"] for where in ("practised", "test")},
        "pass_reference": {where: at[0][f"{where}_pass"] for where in ("practised", "test")},
    }
    fresh = rlvr.run_verifiable(load_reference(), rlvr.LIVE, live=True)
    diffs = differences(runs["live"], fresh, atol=1e-5, rtol=1e-5)
    out["live_reproduces_committed"] = not diffs
    out["live_differences"] = diffs[:10]
    out["live_s"] = fresh["history"][-1]["seconds"]
    return {"verifiable": out}
