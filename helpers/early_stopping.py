"""Early stopping on a validation loss: keep the best weights seen, stop after ``patience`` checks without a better
one. Used by reward-model training (lesson 02) and DPO (lesson 04)."""
from __future__ import annotations

import copy

import torch


class EarlyStopping:
    """Remembers the weights with the lowest validation loss and says when to stop."""

    def __init__(self, model: torch.nn.Module, patience: int, loss: float = float("inf"), step: int = 0):
        self.patience = patience
        self.best_loss, self.best_step = loss, step
        self.best_state = copy.deepcopy(model.state_dict())
        self.checks_since_best = 0

    def update(self, model: torch.nn.Module, loss: float, step: int) -> bool:
        """Record one validation check; True when training should stop."""
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self.best_state = copy.deepcopy(model.state_dict())
            self.checks_since_best = 0
        else:
            self.checks_since_best += 1
        return self.checks_since_best >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Put the best weights back into ``model``."""
        model.load_state_dict(self.best_state)
