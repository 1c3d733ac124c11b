"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) around a base optimizer, as SBI's recipe uses it with SGD.

Each step climbs to the worst point within an L2 ball of radius ρ around the weights (along the gradient),
takes the gradient there, returns to the original weights and lets the base optimizer step with that gradient.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


class SAM:
    """Wraps `base` (any torch optimizer); the LR scheduler and checkpoints use `sam.base`.

    Usage per step: loss.backward(); sam.first_step(); recompute loss; loss.backward(); sam.second_step().
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05) -> None:
        if rho <= 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        self.base = base
        self.rho = rho
        self._perturbations: dict[torch.Tensor, torch.Tensor] = {}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.base.param_groups for p in group["params"] if p.grad is not None]

    @torch.no_grad()
    def first_step(self) -> None:
        """w ← w + ρ·g/‖g‖ (‖g‖ over all parameters)."""
        params = self._params()
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = self.rho / (grad_norm + 1e-12)
        for p in params:
            e = p.grad * scale
            p.add_(e)
            self._perturbations[p] = e
        self.base.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self) -> None:
        """Back to w, then the base optimizer's step with the gradient taken at the perturbed point."""
        for p, e in self._perturbations.items():
            p.sub_(e)
        self._perturbations.clear()
        self.base.step()

    def step(self, closure: Callable[[], torch.Tensor]) -> None:
        """Both steps, with `closure` recomputing the loss and its gradients at the perturbed point."""
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)
