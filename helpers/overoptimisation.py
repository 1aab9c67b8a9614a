"""Over-optimisation: the gold reward against the distance travelled from pi_ref, and Gao et al.'s laws for it.

Gao, Schulman and Hilton 2022 ("Scaling Laws for Reward Model Overoptimization", eqs. 1 and 2) fit the gold reward
gained over the initial policy as a function of d = sqrt(KL(pi || pi_ref)):

    Best-of-N:  R(d) = d (alpha - beta d)            peak at d* = alpha / (2 beta)
    RL:         R(d) = d (alpha - beta log d)        peak at d* = exp(alpha / beta - 1)

while the proxy (the reward model's score) keeps rising. Both forms are linear in (alpha, beta), so the least-squares
fit is closed-form (:func:`fit`); its R^2 says how well the form describes the points. The points come from lesson
05's comparison: Best-of-N's exact curve on the enumerable view (KL exact) and the RL runs' selection checks (KL
from samples, on the test split; reported there, never used to choose).
Used in lesson 05.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FORMS = ("best_of_n", "rl")


def _features(form: str, d: torch.Tensor) -> torch.Tensor:
    """[M, 2] the columns multiplying alpha and beta: (d, -d^2) or (d, -d log d)."""
    if form == "best_of_n":
        return torch.stack([d, -d * d], 1)
    if form == "rl":
        return torch.stack([d, -d * torch.log(d.clamp_min(1e-12))], 1)
    raise ValueError(f"form must be one of {FORMS}, got {form!r}")


@dataclass(frozen=True)
class Fit:
    """A fitted law: alpha, beta, its R^2 on the points it was fitted to, and how many there were."""
    form: str
    alpha: float
    beta: float
    r2: float
    points: int

    def __call__(self, d) -> torch.Tensor:
        """The predicted gold-reward gain at distance(s) d = sqrt(KL)."""
        d = torch.as_tensor(d, dtype=torch.float64)
        return _features(self.form, d.reshape(-1)) @ torch.tensor([self.alpha, self.beta], dtype=torch.float64)

    @property
    def peak(self) -> float:
        """The d at which the law's gold reward is highest (inf when beta <= 0: no turn in sight)."""
        if self.beta <= 0:
            return math.inf
        return self.alpha / (2 * self.beta) if self.form == "best_of_n" else math.exp(self.alpha / self.beta - 1)


def fit(form: str, kl, gain) -> Fit:
    """Least-squares (alpha, beta) of ``form`` through the points (d = sqrt(kl), gain), no intercept: R(0) = 0.

        Best-of-N:  R(d) = d (alpha - beta d)
        RL:         R(d) = d (alpha - beta log d)

    Args:
        form: "best_of_n" or "rl".
        kl: the points' KL(pi || pi_ref) (negative estimates from samples are clipped to 0).
        gain: the gold reward gained over pi_ref at each point.
    """
    kl = torch.as_tensor(kl, dtype=torch.float64).clamp_min(0.0)
    y = torch.as_tensor(gain, dtype=torch.float64)
    if kl.shape != y.shape or kl.ndim != 1 or len(kl) < 3:
        raise ValueError("fit needs at least three (kl, gain) points, as two 1-d sequences of one length")
    X = _features(form, kl.sqrt())
    coef = torch.linalg.lstsq(X, y[:, None]).solution[:, 0]
    residual = y - X @ coef
    r2 = 1.0 - float((residual ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return Fit(form, float(coef[0]), float(coef[1]), r2, len(y))


def best_of_n_points(result: dict) -> list[dict]:
    """Best-of-N's exact curve from a comparison result: [{n, kl, gold, proxy}] (on the enumerable view)."""
    return [{"n": p["n"], "kl": p["kl"], "gold": p["reward"], "proxy": p["proxy_reward"]}
            for p in result["methods"]["best_of_n"]["enumerable_curve"]]


def rl_points(result: dict, method: str) -> list[dict]:
    """A trained method's selection checks, every strength: [{strength, step, kl, gold, proxy}] (test samples)."""
    return [{"strength": run["strength"], "step": c["step"], "kl": c["test"]["kl"],
             "gold": c["test"]["gold_reward"], "proxy": c["test"]["proxy_reward"]}
            for run in result["methods"][method]["runs"] for c in run["checks"] if "test" in c]
