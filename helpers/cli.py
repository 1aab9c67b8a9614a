"""The course's command line: ``python -m helpers COMMAND``.

- ``pretrain``: train the reference model from its seed and save it under helpers/artifacts/.
- ``build preferences``: the course preference set (the reference model's samples, labeled by the annotator).
- ``build reward-model``: the course reward model, trained on that set.
- ``build views``: the reference model's enumerable view of the validation and test splits (helpers/enumerable.py).
- ``build verifiable``: lesson 05's GRPO runs with the verifiable reward (helpers/rlvr.py; about 15 min).
- ``build combinations``: lesson 05's SFT then DPO (helpers/combinations.py; a few minutes).
- ``build clinic``: lesson 05's reading-the-curves runs (helpers/clinic.py; about a minute).
- ``build comparison``: lesson 05's controlled comparison, short and full runs (helpers/comparison.py; 15-45 min).
- ``build surprise-ablation``: PPO against the course reward model with and without its surprise term (surprise.py).
- ``build sycophancy``: the course reward model fine-tuned on honest and on sycophantic labels (sycophancy.py).
- ``build ppo-ablation``: lesson 03's PPO run with one implementation detail off at a time (bench/ppo.py).
- ``build dpo-beta-sweep``: lesson 04's DPO runs with only beta varied, curves and test figures (bench/dpo.py).
- ``evaluate``: print the scorecard of a checkpoint (the reference by default) on the test split.
- ``bench``: measure the figures the issues name; print a table and write bench.json.
- ``exercises``: regenerate every notebooks/NN-*-exercises.ipynb from solutions/NN-*-solutions.ipynb
  (``--execute`` first re-executes the lessons and solutions in place: ``make notebooks``).
- ``grade DIR``: grade every submitted exercise notebook in DIR; write grades.csv and feedback/.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def _build_preferences() -> None:
    from .reward import PREFERENCES_PATH, build_preferences
    pairs = build_preferences(PREFERENCES_PATH)
    print(f"saved {len(pairs)} preference pairs to {PREFERENCES_PATH}")


def _build_reward_model() -> None:
    from .reward import REWARD_MODEL_PATH, build_reward_model
    result = build_reward_model(REWARD_MODEL_PATH)
    print(f"saved the course reward model (step {result.best_step}) to {REWARD_MODEL_PATH}")


def _build_surprise_ablation() -> None:
    from .surprise import ABLATION_PATH, build_ppo_ablation
    build_ppo_ablation(ABLATION_PATH)
    print(f"saved PPO with and without the reward model's surprise term to {ABLATION_PATH}")


def _build_dpo_beta_sweep() -> None:
    from .bench.dpo import BETA_SWEEP_PATH, build_beta_sweep
    sweep = build_beta_sweep(BETA_SWEEP_PATH)
    print(f"saved DPO at {len(sweep['runs'])} (beta, NLL weight) points to {BETA_SWEEP_PATH}")


def _build_ppo_ablation() -> None:
    from .bench.ppo import ABLATION_PATH, build_ablation
    table = build_ablation(ABLATION_PATH)
    print(f"saved lesson 03's PPO ablation ({len(table['rows'])} runs) to {ABLATION_PATH}")


def _build_sycophancy() -> None:
    from .sycophancy import EXPERIMENT_PATH, build_experiment
    build_experiment(EXPERIMENT_PATH)
    print(f"saved the sycophancy experiment to {EXPERIMENT_PATH}")


def _build_views() -> None:
    from .enumerable import VIEWS_PATH, build_views
    stored = build_views(VIEWS_PATH)
    print(f"saved the enumerable views of {', '.join(stored['splits'])} to {VIEWS_PATH}")


def _build_comparison() -> None:
    from .comparison import COMPARISON_PATH, build_comparison
    stored = build_comparison(COMPARISON_PATH)
    took = ", ".join(f"{name} {run['seconds']:.0f} s" for name, run in stored.items())
    print(f"saved the comparison ({took}) to {COMPARISON_PATH}")


def _build_verifiable() -> None:
    from .rlvr import VERIFIABLE_PATH, build_verifiable
    stored = build_verifiable(VERIFIABLE_PATH)
    print(f"saved the verifiable-reward runs ({stored['seconds']:.0f} s) to {VERIFIABLE_PATH}")


def _build_clinic() -> None:
    from .clinic import CLINIC_PATH, build_clinic
    build_clinic(CLINIC_PATH)
    print(f"saved the clinic's DPO and short-limit GRPO runs to {CLINIC_PATH}")


def _build_combinations() -> None:
    from .combinations import COMBINATIONS_PATH, build_combinations
    build_combinations(COMBINATIONS_PATH)
    print(f"saved SFT, DPO and SFT then DPO, scored on test, to {COMBINATIONS_PATH}")


def _build_pipeline() -> None:
    from .pipeline import PIPELINE_PATH, build_pipeline
    build_pipeline(PIPELINE_PATH)
    print(f"saved the end-to-end pipeline's and the RLAIF comparison's figures to {PIPELINE_PATH}")


# `python -m helpers build NAME`: name -> (what it builds, the function that builds it and says where it saved it).
# `make artifacts` builds every one, in this order (later ones may load earlier ones).
BUILDS = {
    "preferences": ("the course preference set (the reference model's samples, labeled)", _build_preferences),
    "reward-model": ("the course reward model, trained on the preference set", _build_reward_model),
    "views": ("the reference model's enumerable view of the validation and test splits", _build_views),
    "dpo-beta-sweep": ("lesson 04's DPO runs with only beta varied (and NLL weight 0 or 0.5)", _build_dpo_beta_sweep),
    "ppo-ablation": ("lesson 03's PPO run with one implementation detail off at a time, and the reference's pass@k",
                     _build_ppo_ablation),
    "surprise-ablation": ("PPO against the course reward model with and without its surprise term",
                          _build_surprise_ablation),
    "sycophancy": ("the course reward model fine-tuned on honest and on sycophantic labels", _build_sycophancy),
    "comparison": ("lesson 05's controlled comparison of Best-of-N, PPO, DPO, GRPO and RLOO (short and full runs; "
                   "minutes)", _build_comparison),
    "verifiable": ("lesson 05's GRPO runs with the verifiable reward, false answers measured exactly (minutes)",
                   _build_verifiable),
    "clinic": ("lesson 05's clinic runs: DPO at beta 0.1 without NLL, GRPO with a 6-token limit (a minute)",
               _build_clinic),
    "combinations": ("lesson 05's SFT then DPO, beside SFT alone and DPO alone (minutes)", _build_combinations),
    "pipeline": ("lesson 06's end-to-end pipeline and RLAIF comparison, full length and short", _build_pipeline),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="train the reference model (deterministic from its seed)")
    p.add_argument("--out", type=Path, default=None, help="where to save (default: the committed artifact)")
    p.add_argument("--steps", type=int, default=None, help="override the number of steps")
    e = sub.add_parser("evaluate", help="print the scorecard of a checkpoint on the test split")
    e.add_argument("checkpoint", nargs="?", type=Path, default=None, help="default: the reference model")
    e.add_argument("--against", type=Path, default=None,
                   help="a second checkpoint to report KL and win rate against (default: the reference)")
    a = sub.add_parser("build", help="build a course artifact from its seed (what `make artifacts` runs)")
    a.add_argument("artifact", choices=list(BUILDS),
                   help="; ".join(f"{name}: {doc}" for name, (doc, _) in BUILDS.items()))
    b = sub.add_parser("bench", help="measure the benchmark figures; write bench.json")
    b.add_argument("--out", type=Path, default=Path("bench.json"))
    x = sub.add_parser("exercises", help="regenerate the exercise notebooks from the solution notebooks")
    x.add_argument("--check", action="store_true",
                   help="write nothing; fail if an exercise notebook is missing or differs from what it would be")
    x.add_argument("--execute", action="store_true",
                   help="first re-execute every lesson and solution notebook in place (what `make notebooks` does)")
    g = sub.add_parser("grade", help="grade a folder of submitted exercise notebooks (one per student)")
    g.add_argument("folder", type=Path, help="the submissions: one NAME.ipynb per student")
    g.add_argument("--out", type=Path, default=None, help="where grades.csv and feedback/ go (default: FOLDER)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per notebook (default 120)")
    g.add_argument("--workers", type=int, default=2, help="notebooks graded at once (default 2)")
    g.add_argument("--solutions", type=Path, default=None,
                   help="the solution notebook (or solutions/ folder) to grade against (default: this course's)")
    g.add_argument("--assignment", default=None, help="e.g. 01-alignment-problem (default: found from the cells)")
    g.add_argument("--memory-gb", type=float, default=4.0, help="address-space limit per notebook (default 4)")
    g.add_argument("--no-sandbox", action="store_true",
                   help="run notebooks without bubblewrap (only inside a disposable container or VM; noted in the CSV)")
    args = parser.parse_args(argv)

    if args.command == "pretrain":
        from dataclasses import replace

        from .pretrain import REFERENCE_PATH, PretrainConfig, pretrain
        cfg = PretrainConfig() if args.steps is None else replace(PretrainConfig(), steps=args.steps)
        path = args.out or REFERENCE_PATH
        pretrain(cfg, path)
        print(f"saved {path}")
    elif args.command == "evaluate":
        from .checkpoint import CheckpointError
        from .evaluate import evaluate_checkpoint
        try:
            evaluate_checkpoint(args.checkpoint, args.against)
        except (FileNotFoundError, CheckpointError) as e:  # a bad path is the user's mistake: one line, no traceback
            raise SystemExit(f"python -m helpers evaluate: {e}") from None
    elif args.command == "build":
        BUILDS[args.artifact][1]()
    elif args.command == "bench":
        from .bench import run_bench
        run_bench(args.out)
    elif args.command == "exercises":
        _exercises(args.check, args.execute)
    elif args.command == "grade":
        from .assignments.grading import grade_folder
        grade_folder(args.folder, args.out, args.timeout, args.workers, args.solutions, args.assignment,
                     sandboxed=not args.no_sandbox, memory=int(args.memory_gb * 1024 ** 3))


def _exercises(check: bool, execute: bool) -> None:
    import sys

    from .assignments import exercises as ex
    if execute:
        for path in ex.lesson_notebooks() + ex.solution_notebooks():
            print(f"executing {path.relative_to(ex.ROOT)}", flush=True)
            ex.execute_in_place(path)
    changed = ex.generate(check=check)
    for path in changed:
        print(f"{'out of date' if check else 'wrote'}: {path.relative_to(ex.ROOT)}")
    if check and changed:
        sys.exit("exercise notebooks differ from their solutions: run `make exercises`")
    if not changed:
        print("exercise notebooks are up to date")
