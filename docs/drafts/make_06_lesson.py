"""Write notebooks/06-implementation.ipynb (unexecuted)."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = []
md = lambda s: cells.append(new_markdown_cell(s.strip("\n")))
code = lambda s: cells.append(new_code_cell(s.strip("\n")))

md(r"""
# 06 · Implementation: the whole pipeline, AI feedback, and the road to production

Lessons 01–05 took the pipeline apart: the alignment problem, reward models, PPO, DPO, group-relative methods. This
lesson puts it back together and runs it end to end on the course model, in one notebook, from the first label to
the last scorecard. Then it replaces the human labels by a model's (a constitutional critic, RL from AI feedback),
and takes the same model and data to the library practitioners use, Hugging Face TRL, on one process and on two.

**You will learn**
- to run the whole pipeline yourself: label pairs in the widget (the simulated annotator labels the rest, into the
  same files), train a reward model, align with PPO, DPO and GRPO, and compare before and after;
- where each equation of lessons 02–05 lives in `helpers` (a table generated from the code);
- how a constitutional critic (Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback") turns written
  principles into preference labels, how good those labels are, and what DPO learns from them;
- to export the course model to Hugging Face, train it with TRL's `DPOTrainer` and `GRPOTrainer`, read TRL's
  metric names, and check that two processes give the one-process result.

**Time to run:** the budget is 90 seconds on a 2-core laptop; the last cell prints what this run took. The
full-length runs (a few minutes) are precomputed by `make artifacts`; the notebook reruns short versions and checks
that they reproduce the committed ones.
""")
code(r"""
import inspect
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

started = time.perf_counter()
import helpers
helpers.require("0.1.0")
from helpers import critic, equations, evaluate, labeling, pipeline, plots, world
from helpers.pretrain import load_reference

plt.rcParams["figure.dpi"] = 90
torch.set_num_threads(1)   # the model is tiny: one thread is as fast as several
reference = load_reference()
committed = pipeline.load_pipeline()   # the figures `make artifacts` computed (python -m helpers build pipeline)
""")

md(r"""
## 1 · Collect preferences

The pipeline starts with people comparing responses. Here the pairs are two samples of the reference model for
each training prompt (prompts whose two samples are the same text are left out). Label a few yourself in the widget below (your labels are saved to
`labels-06/me.jsonl` on every click); the simulated annotator of lesson 02 (τ = 0.5) labels all of them into its own
file in the same folder, through the same `LabelingSession` class. `read_labels` merges the files.
""")
code(r"""
items = pipeline.label_items(reference)
folder = Path("labels-06")
mine = labeling.LabelingSession(items[:10], folder, annotator="me")
labeling.LabelingWidget(mine)
""")
code(r"""
simulated_folder = Path(tempfile.mkdtemp(prefix="labels-06-"))
pipeline.simulate_labels(items, simulated_folder)
exported = labeling.export_pairs(labeling.read_labels(simulated_folder))
print(f"{len(items)} pairs to judge; the simulated annotator's labels give {exported}")
yours = labeling.read_labels(folder)
print(f"you have labeled {len(yours.labels)} pair(s) so far (in {folder}/)")
if yours.labels:   # the simulated annotator's labels beside yours: how often do you agree?
    pipeline.simulate_labels(items, folder)
    print(labeling.report(labeling.read_labels(folder)))
""")
md(r"""
The run below trains on the simulated annotator's labels only, so that it repeats the committed run exactly and the
checks can compare. To train on yours as well, add them: `pairs = exported.pairs +
labeling.export_pairs(labeling.read_labels(folder)).pairs` (the checks will then, rightly, report a different run).
""")

md(r"""
## 2 · The pipeline, end to end

`pipeline.run` wires together the functions of the earlier lessons with one set of settings. Read it: every line is
a lesson.
""")
code(r"""
print(inspect.getsource(pipeline._run))
""")
code(r"""
pairs = exported.pairs
result = pipeline.run(reference, pairs)
live = result.figures
for stage in ("reward_model", "ppo", "dpo", "grpo"):
    print(f"{stage:13s} trained in {live[stage]['train_s']:5.1f} s")
""")
md(r"""
Same seed, same labels, one thread: this run must repeat the short run `make artifacts` stored. The check below
compares every stage's figures (a difference means the code, the artifacts or the seeds changed).
""")
code(r"""
stored = committed["short"]["figures"]
for stage in ("reference", "ppo", "dpo", "grpo"):
    for key in ("gold_reward", "malformed"):
        assert abs(live[stage][key] - stored[stage][key]) <= 0.02, (stage, key, live[stage][key], stored[stage][key])
assert live["labels"]["pairs"] == stored["labels"]["pairs"]
print("the live short run reproduces the committed one (gold reward and malformed rate within 0.02, every stage)")
""")

md(r"""
## 3 · Before and after

The scorecard of every policy on the test split (one sample per prompt, as in every lesson), from this short run
and from the full-length run `make artifacts` made with the same code and settings scaled up.
""")
code(r"""
rows = ["| policy | run | gold reward (95 % CI) | gap closed | KL (nats) | harmful | false answers | fabrication | insult | malformed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
full = committed["full"]["figures"]
for name in ("reference", "ppo", "dpo", "grpo"):
    for run, figs in (("short, live", live), ("full, stored", full)):
        f = figs[name]
        rows.append(f"| {name} | {run} | {f['gold_reward']:+.3f} ± {f['gold_reward_ci']:.3f} | {f['gap_closed']:.2f} | "
                    f"{f.get('kl', 0.0):.2f} | {f['harmful_compliance']:.1%} | {f['false_answer']:.1%} | "
                    f"{f['fabrication']:.1%} | {f['insult']:.1%} | {f['malformed']:.1%} |")
display(Markdown("\n".join(rows)))
print(f"full run: {full['labels']['pairs']} labelled pairs; short run: {live['labels']['pairs']}")
""")
code(r"""
fig, ax = plt.subplots(figsize=(7, 3.2))
names = ["reference", "ppo", "dpo", "grpo"]
for k, (run, figs, shift) in enumerate((("short, live", live, -0.18), ("full, stored", full, 0.18))):
    ax.bar([i + shift for i in range(4)], [figs[n]["gold_reward"] for n in names], width=0.34,
           yerr=[figs[n]["gold_reward_ci"] for n in names], capsize=3, label=run,
           color=[plots.METHOD_COLOURS.get(n, "grey") for n in names], alpha=0.55 if k == 0 else 1.0)
ax.set_xticks(range(4), names)
ax.axhline(world.best_gold_reward("test"), color="black", lw=0.8, ls="--", label="best possible")
ax.set_ylabel("mean gold reward (test)")
ax.set_title("Every method improves on the reference (full runs: beyond the 95 % interval)")
ax.legend(fontsize=8)
plt.show()
for n in ("ppo", "dpo", "grpo"):   # the title's claims, checked
    assert full[n]["gold_reward"] - full[n]["gold_reward_ci"] > full["reference"]["gold_reward"]
""")
md(r"""
Responses side by side: the same test prompts, the reference's response and each aligned policy's (samples at
temperature 1 from the protocol's seed), with their gold rewards.
""")
code(r"""
shown = [p for p in world.prompts("test")][::75][:6]
samples = {name: evaluate.sample_responses(policy, shown, 1.0, evaluate.PROTOCOL_SEED)
           for name, policy in result.policies.items()}
for i, prompt in enumerate(shown):
    print(f"{prompt.text}")
    for name, s in samples.items():
        print(f"   {name:9s} {world.gold_reward(prompt, s.texts[i]):+5.2f}  {s.texts[i]}")
""")

md(r"""
## 4 · A tour of `helpers`: every equation, and where it is computed

Generated from the code when this cell runs: each formula is quoted from the docstring of the function that
computes it (a test checks the quote), and the module and line are found by `inspect`. Open the file at that line
to read the implementation next to the maths.
""")
code(r"""
display(Markdown(equations.markdown()))
""")

md(r"""
## 5 · A constitutional critic: AI feedback instead of human labels

Labels are the expensive part of the pipeline. Bai et al. 2022 ("Constitutional AI") let a model critique and revise
responses against a short written *constitution*, and train on the AI's preferences (revised ≻ original): RL from AI
feedback, RLAIF. The course's critic is rules over what it can see (`helpers/critic.py`): the form of a response
(refusal, insult, help with harm, a confident claim about the user, filler, broken text), the kind of prompt, and a
calculator for sums. It has no table of facts.
""")
code(r"""
for p in critic.CONSTITUTION:
    print(f"{p.name:12s} {p.rule}")
""")
code(r"""
first = lambda kind: next(p for p in world.prompts("train") if p.kind == kind)
examples = [(first("arithmetic"), "wrong"), (first("harmful"), "harmful"), (first("unanswerable"), "fabrication"),
            (first("sound"), "insult"), (first("capital"), "wrong")]
for prompt, behaviour in examples:
    c = critic.critique(prompt, world.response(prompt, behaviour, 1))
    print(f"{prompt.text}\n   response : {c.response}\n   critique : {c.text}\n   revision : {c.revision}\n")
""")
md(r"""
The last example is the critic's blind spot: a wrong capital passes, because nothing it knows contradicts it. How
good are its labels overall? `make artifacts` let it revise six reference samples per training prompt, as many as
the course preference set has, and compared its pairs with the gold reward and with the annotator:
""")
code(r"""
rlaif = committed["rlaif"]
print(f"AI pairs: {rlaif['pairs']}, by principle broken: {rlaif['principles']}")
print(f"agreement with the gold reward:        AI labels {rlaif['label_gold_agreement']:.3f}, "
      f"annotator labels {rlaif['annotator_label_gold_agreement']:.3f}")
print(f"agreement with the annotator's choice: AI labels {rlaif['label_annotator_agreement']:.3f}, "
      f"annotator labels {rlaif['annotator_label_annotator_agreement']:.3f}")
print(f"critic recall: it revised {rlaif['critic_recall']:.1%} of the sampled responses that fall short of the best")
""")
code(r"""
rows = ["| DPO on | pairs | gold reward (95 % CI) | gap closed | harmful | false answers | fabrication | insult | malformed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for name, label in (("ai_dpo", "the critic's labels"), ("annotator_dpo", "the annotator's labels")):
    f = rlaif[name]
    rows.append(f"| {label} | {rlaif['pairs']} | {f['gold_reward']:+.3f} ± {f['gold_reward_ci']:.3f} | "
                f"{f['gap_closed']:.2f} | {f['harmful_compliance']:.1%} | {f['false_answer']:.1%} | "
                f"{f['fabrication']:.1%} | {f['insult']:.1%} | {f['malformed']:.1%} |")
display(Markdown("\n".join(rows)))
""")
md(r"""
Live, a short slice of the same experiment (one sample per prompt, 30 DPO steps), checked against the stored short
run:
""")
code(r"""
short = pipeline.rlaif_comparison(reference, samples_per_prompt=1, cfg=pipeline.RLAIF_SHORT)
for key in ("pairs", "label_gold_agreement", "critic_recall"):
    assert abs(short[key] - committed["rlaif_short"][key]) <= 1e-9, key
for run in ("ai_dpo", "annotator_dpo"):
    assert abs(short[run]["gold_reward"] - committed["rlaif_short"][run]["gold_reward"]) <= 0.02, run
print(f"short: {short['pairs']} AI pairs; DPO gap closed on AI labels {short['dpo_gap_closed']:.2f}, "
      f"on annotator labels {short['annotator_dpo_gap_closed']:.2f}")
""")

md(r"""
## 6 · To production: the course model in Hugging Face TRL

The course model is a GPT-2 in all but names. `helpers/hf_export.py` converts it and the tokenizer to
`transformers` classes and saves them to a local folder (nothing is downloaded); `helpers/trl_train.py` trains the
exported model with TRL's `DPOTrainer` on the course preference set and with `GRPOTrainer` on lesson 05's verifiable
reward, and converts the result back so that the course's scorecard can score it.
""")
code(r"""
import warnings
warnings.filterwarnings("ignore", category=FutureWarning)   # transformers' deprecation notices, not ours
from helpers import hf_export, trl_train
from helpers.tokenizer import Tokenizer, encode_pairs
from helpers.verifiable import verifiable_reward

export_folder = hf_export.save_pretrained(reference, Path(tempfile.mkdtemp(prefix="course-gpt2-")) / "reference")
hf_model, hf_tokenizer = hf_export.load_pretrained(export_folder)
prompts = [p for p in world.prompts("test")][::20]
batch = encode_pairs(Tokenizer(), [p.text for p in prompts], [world.response(p, "idk") for p in prompts])
with torch.no_grad():
    diff = (reference(batch.input_ids, batch.attention_mask)
            - hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits)
print(f"exported to {export_folder.name}/: {sorted(f.name for f in export_folder.iterdir())}")
print(f"max |course logits - GPT-2 logits| on {len(prompts)} padded sequences: {diff[batch.attention_mask.bool()].abs().max():.2e}")
assert diff[batch.attention_mask.bool()].abs().max() <= 1e-5
""")
code(r"""
trl_runs = trl_train.lesson_runs(export_folder, verifiable_reward)
for name, run in trl_runs.items():
    card = evaluate.scorecard(run.policy, reference)
    print(f"TRL {name.upper():4s}: {run.steps} steps in {run.seconds:.1f} s -> gold reward {card.gold_reward:+.3f} "
          f"± {card.gold_reward_ci:.3f}, KL {card.kl:.2f}")
""")
md(r"""
Every course option and metric under TRL's name, with the last value each short run logged. `tests/test_bridge.py`
checks every TRL name in this table against the installed TRL, so when TRL renames something the test fails, not
this lesson.
""")
code(r"""
display(Markdown(trl_train.names_table({"dpo log": trl_runs["dpo"].history, "grpo log": trl_runs["grpo"].history})))
""")
md(r"""
**Two processes.** The same TRL DPO script runs as two data-parallel processes with `torchrun --standalone
--nproc_per_node 2` (gloo over loopback); `make test` runs it and checks that the per-step losses and the trained
weights match one process with the same global batch. The README's section "From the course to production" gives
the commands, what changes on many GPUs (accelerate, DeepSpeed ZeRO, vLLM for GRPO's generation) and where PPO went
(TRL removed its `PPOTrainer` in 1.13: OpenRLHF and verl), marked as not run here.
""")

md(r"""
## Summary

- The whole pipeline is a handful of calls, each a lesson: labels → reward model → PPO; labels → DPO; a checker →
  GRPO. The short live run and the full stored run above say how far each gets.
- AI feedback from written principles is precise where the critic can check and blind where it cannot; measure both
  (agreement and recall) before trusting it.
- The course model, data and rewards move to Hugging Face TRL unchanged; the names table maps what you learned to
  what TRL logs.
""")
code(r"""
print(f"this notebook ran in {time.perf_counter() - started:.0f} s")
""")

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"}})
nbformat.write(nb, "/work/main/notebooks/06-implementation.ipynb")
print(len(cells), "cells")
