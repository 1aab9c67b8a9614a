"""``make bench`` section for RL from AI feedback (lesson 06): ``rlaif.*``, from
:func:`helpers.pipeline.rlaif_comparison`.

The constitutional critic (:mod:`helpers.critic`) revises the reference's sampled responses to the train prompts
(:data:`~helpers.pipeline.RLAIF_SAMPLES` per prompt, as many as the course preference set samples); each
(revision, original) is an AI-labelled pair. DPO on those pairs against DPO on as many of the course's
annotator-labelled pairs (``world.Annotator`` at the course tau), same settings, each checkpoint chosen by the
course's selection rule (:mod:`helpers.selection`); test split.

- ``label_gold_agreement`` / ``label_annotator_agreement``: the AI pairs' agreement with the gold reward and with the
  annotator's choice probability; ``annotator_label_gold_agreement``: the same for the annotator's own pairs.
- ``critic_recall``: the share of sampled responses below their prompt's best gold reward that the critic revised.
- ``dpo_gap_closed`` and ``annotator_dpo_gap_closed``, and each run's figures under ``ai_dpo`` / ``annotator_dpo``.
"""
from __future__ import annotations

from ..pipeline import rlaif_comparison
from ..pretrain import load_reference


def bench_rlaif() -> dict:
    """{"rlaif": {...}}."""
    return {"rlaif": rlaif_comparison(load_reference())}
