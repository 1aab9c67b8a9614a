"""The course's command line: ``python -m helpers COMMAND``.

- ``pretrain``: train the reference model from its seed and save it under helpers/artifacts/.
- ``evaluate``: print the scorecard of a checkpoint (the reference by default) on the test split.
- ``bench``: measure the figures the issues name; print a table and write bench.json.
"""
from __future__ import annotations

import argparse
from pathlib import Path


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
    b = sub.add_parser("bench", help="measure the benchmark figures; write bench.json")
    b.add_argument("--out", type=Path, default=Path("bench.json"))
    args = parser.parse_args(argv)

    if args.command == "pretrain":
        from dataclasses import replace

        from .checkpoint import REFERENCE_PATH, PretrainConfig, pretrain
        cfg = PretrainConfig() if args.steps is None else replace(PretrainConfig(), steps=args.steps)
        path = args.out or REFERENCE_PATH
        pretrain(cfg, path)
        print(f"saved {path}")
    elif args.command == "evaluate":
        from .evaluate import evaluate_checkpoint
        evaluate_checkpoint(args.checkpoint, args.against)
    elif args.command == "bench":
        from .bench import run_bench
        run_bench(args.out)
