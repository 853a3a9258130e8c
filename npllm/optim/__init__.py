"""Optimizers, learning-rate schedules and gradient clipping (see optimizers.py for the flat-buffer design)."""

from npllm.optim.optimizers import (SGD, Adam, AdamW, Optimizer, clip_grad_norm, configure_param_groups,
                                    decays_matrices, param_groups_by_name)
from npllm.optim.schedules import ConstantLR, WarmupCosineLR, set_lr

__all__ = [
    "Optimizer", "SGD", "Adam", "AdamW", "configure_param_groups", "decays_matrices", "param_groups_by_name",
    "clip_grad_norm",
    "ConstantLR", "WarmupCosineLR", "set_lr",
]
