"""The course's equations and the functions that compute them: a tour of ``helpers`` for lesson 06.

:data:`EQUATIONS` lists, per lesson, each equation the lessons derive and the function that computes it. The formula
is quoted from that function's docstring (``tests/test_equations.py`` checks that every quote is there, word for
word, and :func:`table` finds each function's module and line with ``inspect`` when it runs), so the table cannot
drift from the code: rename a function, move it, or rewrite its equation, and the table follows or a test fails.
Used in lesson 06.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class Equation:
    lesson: str        # "02" .. "05"
    what: str          # the equation's name in the lessons
    formula: str       # quoted from the docstring of ``function``
    function: str      # "module:qualified.name" inside helpers


EQUATIONS: tuple[Equation, ...] = (
    Equation("02", "Bradley-Terry loss", "-log sigma(r_chosen - r_rejected)", "reward:bradley_terry_loss"),
    Equation("02", "Bayes-optimal accuracy", "mean(sigmoid(|delta| / tau))", "world:bayes_accuracy"),
    Equation("02", "Best-of-N KL bound", "KL(Best-of-n || pi_ref) <= log n - (n - 1) / n",
             "optimal:best_of_n_kl_bound"),
    Equation("02", "Best-of-N policy", "pi_n(y) = pi_ref(y) * (F(s_y)^n - F_(s_y)^n) / (F(s_y) - F_(s_y))",
             "optimal:best_of_n_policy"),
    Equation("03", "KL-penalised per-token reward",
             "r_t = -beta * (log pi(y_t|s_t) - log pi_ref(y_t|s_t))  +  [t = last real token] * score",
             "ppo:kl_penalised_rewards"),
    Equation("03", "GAE", "A_t = sum_l (gamma * lam)^l * delta_{t+l} = delta_t + gamma * lam * A_{t+1}", "ppo:gae"),
    Equation("03", "clipped surrogate", "loss = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))",
             "ppo:clipped_policy_loss"),
    Equation("03", "clipped value loss", "V_clip = V_old + clip(V - V_old, -eps_v, eps_v)",
             "ppo:clipped_value_loss"),
    Equation("03", "whitening", "whiten(x) = (x - mean) / sqrt(var + eps)", "ppo:whiten"),
    Equation("04", "the KL-regularised optimum", "pi*(y) proportional to pi_ref(y) * exp(r(y) / beta)",
             "optimal:optimal_policy"),
    Equation("04", "its value", "beta * log Z = max over pi of E_pi[r] - beta * KL(pi || pi_ref)",
             "optimal:optimal_objective"),
    Equation("04", "DPO loss", "loss = -log sigma(beta * h)", "dpo:dpo_loss"),
    Equation("04", "IPO loss", "loss = (h - 1 / (2 beta))^2", "dpo:ipo_loss"),
    Equation("04", "cDPO loss", "loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)", "dpo:cdpo_loss"),
    Equation("04", "SimPO loss", "loss = -log sigma(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma)",
             "dpo:simpo_loss"),
    Equation("05", "GRPO advantages", "A_i = (r_i - mean_j r_j) / (std_j r_j + eps)", "grpo:grpo_advantages"),
    Equation("05", "RLOO advantages", "A_i = r_i - 1/(G - 1) * sum_{j != i} r_j", "grpo:rloo_advantages"),
    Equation("05", "k3 KL estimate", "k3 = pi_ref/pi - log(pi_ref/pi) - 1", "grpo:k3_kl"),
    Equation("05", "GRPO loss", "loss = 1/B sum_i 1/|y_i| sum_t [clip_t(i) + beta * k3_t(i)]", "grpo:grpo_loss"),
    Equation("05", "pass@k", "pass@k = 1 - C(n - c, k) / C(n, k)", "evaluate:pass_at_k"),
    Equation("05", "fraction of the optimum", "(R - R_ref) / (R*(KL) - R_ref)", "comparison:fraction_of_optimum"),
    Equation("05", "over-optimisation, Best-of-N", "R(d) = d (alpha - beta d)", "overoptimisation:fit"),
    Equation("05", "over-optimisation, RL", "R(d) = d (alpha - beta log d)", "overoptimisation:fit"),
)


def resolve(equation: Equation):
    """The function an equation names."""
    module, qualname = equation.function.split(":")
    obj = importlib.import_module(f"helpers.{module}")
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def table(lessons: tuple[str, ...] = ("02", "03", "04", "05")) -> list[dict]:
    """One row per equation of ``lessons``: lesson, equation, formula, and where the code is (module, function,
    first line), found now by ``inspect``."""
    rows = []
    for eq in EQUATIONS:
        if eq.lesson not in lessons:
            continue
        fn = resolve(eq)
        _, line = inspect.getsourcelines(fn)
        rows.append({"lesson": eq.lesson, "equation": eq.what, "formula": eq.formula,
                     "module": f"helpers/{eq.function.split(':')[0]}.py", "function": eq.function.split(":")[1],
                     "line": line})
    return rows


def markdown(lessons: tuple[str, ...] = ("02", "03", "04", "05")) -> str:
    """:func:`table` as a markdown table, for ``IPython.display.Markdown``."""
    lines = ["| lesson | equation | formula | code |", "| --- | --- | --- | --- |"]
    for r in table(lessons):
        lines.append(f"| {r['lesson']} | {r['equation']} | `{r['formula']}` | "
                     f"`{r['module']}:{r['line']}` `{r['function']}` |")
    return "\n".join(lines)
