"""Learning-rate schedules: the learning rate as a pure function of the step.

A schedule here is a callable ``schedule(step) -> lr`` with no state of its
own, so resuming a run needs only the step number, and a plot of the
schedule is ``[schedule(s) for s in range(n)]``.  ``set_lr`` writes the
value into every parameter group of an optimizer; call both once per step:

    lr = schedule(step); set_lr(optimizer, lr); optimizer.step()

Two schedules:

- ``ConstantLR(lr)``;
- ``WarmupCosineLR(max_lr, warmup_steps, total_steps, min_lr)``: a linear
  warm-up from max_lr / warmup_steps to max_lr over the first
  ``warmup_steps`` steps (Adam's early moment estimates are noisy, so the
  first steps are kept small), then half a cosine from max_lr down to the
  floor min_lr at ``total_steps``, and the floor after that.

Left out: step decay, restarts, per-group multipliers (set each group's
``lr`` yourself if you need them).
"""

import math

from npllm.errors import SettingError


class ConstantLR:
    """The same learning rate at every step."""

    def __init__(self, lr):
        self.lr = lr

    def __call__(self, step: int) -> float:
        return self.lr


class WarmupCosineLR:
    """Linear warm-up to ``max_lr``, cosine decay to ``min_lr`` at ``total_steps``, then constant.

        step < W:        lr = max_lr (step + 1) / W
        W <= step <= S:  lr = min_lr + (max_lr - min_lr) (1 + cos(pi (step - W) / (S - W))) / 2
        step > S:        lr = min_lr
    """

    def __init__(self, max_lr, warmup_steps, total_steps, min_lr=0.0):
        if not 0 <= warmup_steps <= total_steps:
            raise SettingError(
                f"WarmupCosineLR: need 0 <= warmup_steps <= total_steps, got {warmup_steps} and {total_steps}"
            )
        self.max_lr, self.min_lr = max_lr, min_lr
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.max_lr * (step + 1) / self.warmup_steps
        if step >= self.total_steps:
            return self.min_lr
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.max_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, lr: float):
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
