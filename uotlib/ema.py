"""Exponential moving average (EMA) of a network's weights.

After step t the average holds

    theta_ema <- d_t * theta_ema + (1 - d_t) * theta,

with d_t = decay, or d_t = min(decay, (1 + t) / (10 + t)) when ``warmup`` is
on. The average starts from the network's weights at construction, so
without warm-up the initial (random) weights keep a share decay^t of the
average: 0.9999^23400 = 0.096 after 50 MNIST epochs of 468 steps. Warm-up
forgets the start in proportion to the steps taken and reaches d_t = 0.999
after about 9,000 steps.

Floating-point buffers (normalisation statistics) are averaged like the
parameters when ``average_buffers`` is true and copied otherwise; integer
buffers (counters) are always copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """A frozen copy of ``model`` that tracks its moving average.

    The step counter is a buffer, so ``state_dict`` and ``load_state_dict``
    round-trip the whole state. Call :meth:`update` after each optimiser step
    and evaluate ``ema.module``.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        warmup: bool = False,
        average_buffers: bool = True,
    ):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1], got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.average_buffers = average_buffers
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay d_t that the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        t = int(self.step.item())
        return min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        decay = self.current_decay()
        for avg, new in zip(self.module.parameters(), model.parameters(), strict=True):
            avg.lerp_(new.detach(), 1.0 - decay)

        for avg, new in zip(self.module.buffers(), model.buffers(), strict=True):
            if self.average_buffers and avg.is_floating_point():
                avg.lerp_(new, 1.0 - decay)
            else:
                avg.copy_(new)
        self.step += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
