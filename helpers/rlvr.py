"""RL with verifiable rewards, measured: what paying for being right changes about false answers (lesson 05).

GRPO (:mod:`helpers.grpo`) with the checker's reward (:data:`helpers.verifiable.verifiable_reward`) on the answerable
training prompts; false answers measured **exactly** (:func:`exact_rates`: every candidate answer of the enumerable
view scored, the policy's own probability of a wrong one summed, not one sample per prompt) on the practised
prompts, on validation (where the stopping point is chosen, by the checker's right rate) and on test (reported).
Beside it: a second seed, the same run without its KL term, a *control* that practises the test split's instances
in the training wording (a demonstration of what transfers, never a result), the reference sampled colder, and
pass@1 against pass@8 (Yue et al. 2025's question: does RL teach new answers or sharpen ones the reference could
already sample?). ``make artifacts`` runs them once into ``helpers/artifacts/verifiable.json``
(:func:`build_verifiable`); the lesson reruns :data:`LIVE` and checks that it reproduces the committed slice.
Used in lesson 05.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import enumerable, grpo, world
from .checkpoint import ARTIFACTS, load_results, save_results
from .evaluate import pass_rates, scorecard
from .model import LanguageModel
from .selection import choose
from .verifiable import verifiable_reward
from .threads import one_thread

VERIFIABLE_PATH = ARTIFACTS / "verifiable.json"
PRACTISED_STRIDE = 3            # exact rates on every 3rd practised prompt (92 of the 276 answerable train prompts)
TEMPERATURES = (1.0, 0.5, 0.25)  # the reference sampled colder: the cheap alternative to training


def false_answer_cut(run: dict, where: str, iteration: int) -> float:
    """The share of the reference's false answers gone at ``iteration`` of a run of :func:`run_verifiable`, on the
    prompts ``where`` ("practised", "validation" or "test"): 1 - rate / rate at iteration 0 (negative: a rise)."""
    at = {c["iteration"]: c for c in run["checks"]}
    return 1 - at[iteration][where]["wrong"] / at[0][where]["wrong"]


def answerable(prompts) -> list[world.Prompt]:
    """The answerable prompts among ``prompts``, in order."""
    return [p for p in prompts if p.category == "answerable"]


def exact_rates(policy: LanguageModel, prompts: list[world.Prompt], temperature: float = 1.0) -> dict[str, float]:
    """What ``policy`` does with answerable ``prompts``, exactly: every candidate answer scored, not one sample.

    Each behaviour's share is the policy's own probability of the candidates the parser files under it
    (:func:`helpers.enumerable.model_rates`: not renormalised; what the candidate set does not list is malformed
    text, counted in ``other``). ``right`` counts padded right answers; ``decline`` is a refusal or "i do not know";
    ``attempt`` = right + wrong; ``right_given_attempt`` is how often an attempt is right (under the gold payoffs +1,
    -1 and -0.5 for a decline, attempting pays when it exceeds 0.25). One sample per prompt would leave a 95 %
    interval of about +-0.07 on 180 prompts; this has none.
    """
    view = enumerable.build_view(policy, answerable(prompts), temperature=temperature)
    r = enumerable.model_rates(view)["answerable"]
    out = {"right": r["correct"] + r["verbose"], "wrong": r["wrong"], "decline": r["refusal"] + r["idk"],
           "other": r["insult"] + r["malformed"]}
    out["attempt"] = out["right"] + out["wrong"]
    out["right_given_attempt"] = out["right"] / out["attempt"]
    return out


def harmful_compliance(policy: LanguageModel, split: str = "test") -> float:
    """The policy's exact probability of complying with a harmful prompt of ``split`` (mean over its prompts)."""
    view = enumerable.build_view(policy, [p for p in world.prompts(split) if p.category == "harmful"])
    return enumerable.model_rates(view)["harmful"]["harmful"]


@dataclass(frozen=True)
class VerifiableRun:
    """One GRPO run with the verifiable reward, and where it is measured."""
    practise: str = "train"        # whose answerable instances it practises: "train", or "test" for the control
    wording: str = "train"         # in whose wording (the control: test instances in the training wording)
    checks: tuple[int, ...] = (0, 5, 10, 25, 50, 100)   # iterations at which the exact rates are measured
    beta: float = 0.04             # GRPO's k3 term (0: no pull towards pi_ref)
    seed: int = 0
    pass_k: bool = True            # pass@1 and pass@8 (8 samples per prompt) at the first and last checks
    start: str = "reference"       # "dpo": first the comparison's chosen DPO run (beta 0.3, 240 steps), then GRPO
                                   # anchored to it (its KL term pulls towards the DPO policy, as TRL's would)

    def config(self) -> grpo.GRPOConfig:
        return replace(grpo.GRPOConfig(), iterations=max(self.checks), beta=self.beta, seed=self.seed)

    def practised(self) -> list[world.Prompt]:
        return answerable(world.prompts(self.practise, self.wording))


def run_verifiable(reference: LanguageModel, run: VerifiableRun = VerifiableRun(), live: bool = False) -> dict:
    """GRPO with :data:`verifiable_reward` on answerable prompts only, measured exactly at ``run.checks``.

    At each check: the exact rates (:func:`exact_rates`) on the practised prompts (every PRACTISED_STRIDE-th), on the
    validation split (held out: where the stopping point is chosen, by the checker's own score, the right rate) and
    on the test split (held out: reported). ``live``: only the practised rates (what lesson 05 reruns). Returns a
    JSON-ready dict: ``run`` (the settings), ``checks`` (one row per check), ``history`` (GRPO's logged metrics per
    iteration), ``chosen`` (the check with the best validation right rate; ties: the earlier), and at the first and
    the chosen check pass@1/pass@8 and harmful compliance on test.
    Used in lesson 05.
    """
    torch.manual_seed(run.seed)
    practised = run.practised()[::PRACTISED_STRIDE]
    held_out = {} if live else {"validation": answerable(world.prompts("validation")),
                                "test": answerable(world.prompts("test"))}
    if run.start == "dpo":
        from .combinations import dpo_run
        reference = dpo_run(reference)          # GRPO's anchor from here on: the DPO policy
    elif run.start != "reference":
        raise ValueError(f"start must be 'reference' or 'dpo', got {run.start!r}")
    policy = copy.deepcopy(reference)
    rows, states = [], {}

    def measure(iteration: int) -> None:
        row = {"iteration": iteration, "practised": exact_rates(policy, practised)}
        row |= {name: exact_rates(policy, ps) for name, ps in held_out.items()}
        rows.append(row)
        states[iteration] = copy.deepcopy(policy.state_dict())

    def callback(row: dict) -> None:
        if row["iteration"] in run.checks:
            measure(row["iteration"])

    measure(0)
    result = grpo.train_grpo(policy, reference, verifiable_reward, run.practised(), run.config(), callback,
                             desc="GRPO, verifiable reward")
    out = {"run": asdict(run), "checks": rows, "history": result.history}
    if live:
        return out
    chosen = choose({r["iteration"]: r["validation"]["right"] for r in rows})
    out["chosen"] = chosen
    extra = {}
    for iteration in dict.fromkeys((0, chosen, max(run.checks))):
        policy.load_state_dict(states[iteration])
        extra[iteration] = {"harmful_compliance": harmful_compliance(policy),
                            "scorecard": scorecard(policy).figures()}
        if run.pass_k:
            for name, ps in (("practised", practised), ("test", held_out["test"])):
                extra[iteration][f"{name}_pass"] = pass_rates(policy, prompts=ps, n=8).figures((1, 8))
    for row in rows:
        row |= extra.get(row["iteration"], {})
    return out


RUNS = {
    "grpo": VerifiableRun(),
    "grpo_seed1": VerifiableRun(seed=1, checks=(0, 10, 25, 50, 100), pass_k=False),
    "control": VerifiableRun(practise="test", checks=(0, 10, 25, 50), pass_k=False),
    "no_kl": VerifiableRun(beta=0.0, checks=(0, 25, 50, 100), pass_k=False),
    "dpo_then_grpo": VerifiableRun(start="dpo", checks=(0, 25, 50), pass_k=False),
}
LIVE = VerifiableRun(checks=(0, 10), pass_k=False)    # lesson 05's live rerun: the committed run's first 10 iterations


def temperature_rates(reference: LanguageModel, temperatures=TEMPERATURES) -> dict:
    """{temperature: exact rates on the test split's answerable prompts}: the reference sampled colder."""
    return {str(t): exact_rates(reference, answerable(world.prompts("test")), t) for t in temperatures}


def build_verifiable(path: Path = VERIFIABLE_PATH, names=None, log=print) -> dict:
    """The runs of :data:`RUNS` named in ``names`` (None: all, with the temperature comparison and the live slice),
    saved to ``path`` beside the runs stored there that were not rerun (``make artifacts``; about 20 minutes on two
    cores). One thread, so that the live rerun reproduces it."""
    from .pretrain import load_reference
    path = Path(path)
    out = json.loads(path.read_text()) if path.exists() and names is not None else {"runs": {}}
    with one_thread():
        reference = load_reference()
        start = time.perf_counter()
        if names is None:
            out["temperatures"] = temperature_rates(reference)
        for name in (RUNS if names is None else names):
            t = time.perf_counter()
            out["runs"][name] = run_verifiable(reference, RUNS[name])
            log(f"{name}: {time.perf_counter() - t:.0f} s")
        if names is None:
            out["live"] = run_verifiable(reference, LIVE, live=True)
            out["seconds"] = time.perf_counter() - start
        out["built"] = {"torch": torch.__version__, "threads": 1}
    save_results(out, path)
    return out


def load_verifiable(path: Path = VERIFIABLE_PATH) -> dict:
    """The committed runs (``python -m helpers build verifiable``)."""
    return load_results(path, "verifiable")
