"""Optimizers: SGD (with momentum and Nesterov), Adam and AdamW, over flat buffers.

An optimizer turns gradients into weight updates.  With g the gradient of
the loss, t the step (from 1) and lr the learning rate:

    SGD       d = g + wd p;  b = mu b + d;  d = d + mu b (Nesterov) or b;   p -= lr d
    Adam      g = g + wd p   (L2: the decay goes through the moments)
              m = b1 m + (1 - b1) g          running mean of g
              v = b2 v + (1 - b2) g^2        running mean of g^2
              p -= lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)
    AdamW     as Adam without the L2 term, plus a *decoupled* decay first:
              p *= 1 - lr wd
              (Loshchilov & Hutter: with Adam, L2 is rescaled by 1/sqrt(v) and
              stops being a decay; AdamW decays every weight at the same rate.)

These are PyTorch's formulas (``torch.optim.SGD/Adam/AdamW``, without
dampening, amsgrad or maximize), so the tests can compare step by step.  As
in PyTorch, every parameter an optimizer is given is decayed by its group's
``weight_decay``; ``configure_param_groups`` builds the usual two groups
(decay the matrices; not biases or LayerNorm gains).  Frozen parameters
(``requires_grad`` False, e.g. a base model under LoRA adapters) are left
out when the optimizer is built: no buffers, no moments, no decay.  Freezing
or unfreezing a parameter afterwards needs a new optimizer: ``step`` refuses
to run with a parameter frozen since, and one unfrozen since is simply not
among those it trains.

The speed design: flat buffers.
A GPT has dozens of parameter arrays.  Updating them one by one costs a
Python loop and a dozen small NumPy calls per array per step.  Instead, at
construction each parameter group is laid out in one contiguous array:

    group.data = [ p0.ravel() | p1.ravel() | ... ]      p_i.data is a view into it
    group.grad = [ g0.ravel() | g1.ravel() | ... ]      p_i.grad is a view into it

The autograd engine accumulates a leaf's gradient in place
(``leaf.grad += g``) when ``grad`` is not None, so backward writes straight
into ``group.grad``; ``zero_grad`` is one ``fill(0)``; and ``step`` is a
handful of vectorised in-place calls (``out=``) over whole buffers, with
the moments (m, v) flat too and one scratch buffer reused for the
temporaries.  Adam's step runs over cache-sized pieces of the buffers on
all cores (``map_rows``, from ``npllm.functional._kernels``): its thirteen
passes (AdamW's; Adam's without decay, twelve) then read
cache, not memory.  Anything that rebinds ``param.data`` or ``param.grad`` (e.g.
setting ``grad = None``) is noticed and re-attached, keeping the values,
at the next ``step`` or ``zero_grad``; ``Module.load_state_dict`` copies
into the views and so keeps them.

Two consequences of the flat layout.  A parameter whose gradient was never
set counts as having gradient zero (PyTorch would skip it; with decay or
momentum it still moves).  And all parameters of a group must share a dtype.
"""

import math
from functools import partial

import numpy as np

from npllm.functional._kernels import map_rows


class FlatGroup:
    """One parameter group as two flat arrays, ``data`` and ``grad``; each parameter holds views into them."""

    def __init__(self, params):
        dtypes = sorted({str(p.dtype) for p in params})
        if len(dtypes) > 1:
            raise TypeError(f"a parameter group must have one dtype, got {', '.join(dtypes)}")
        dtype = params[0].dtype if params else np.float32
        size = sum(p.size for p in params)
        self.data = np.empty(size, dtype=dtype)
        self.grad = np.zeros(size, dtype=dtype)
        self.scratch = np.empty(size, dtype=dtype)  # reused for the temporaries of a step
        self.views = []
        offset = 0
        for p in params:
            data_view = self.data[offset:offset + p.size].reshape(p.shape)
            grad_view = self.grad[offset:offset + p.size].reshape(p.shape)
            self.views.append((p, data_view, grad_view))
            offset += p.size
        self.reattach()

    def reattach(self):
        """Point every parameter's ``data`` and ``grad`` back at the buffers, keeping their current values."""
        for p, data_view, grad_view in self.views:
            if p.data is not data_view:
                np.copyto(data_view, p.data)
                p.data = data_view
            if p.grad is not grad_view:
                np.copyto(grad_view, 0 if p.grad is None else p.grad)
                p.grad = grad_view


class Optimizer:
    """Base class: parameter groups (dicts of settings, as in PyTorch), flat buffers, per-group state.

    A subclass defines ``_new_state(flat)`` (its moment buffers) and
    ``_update(group, flat, state)`` (one step of one group).
    """

    def __init__(self, params, **defaults):
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups, self.flat_groups, self.state = [], [], []
        seen = set()
        for settings in groups:
            group = {**defaults, **settings, **_trainable(settings)}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError(f"a parameter of shape {p.shape} appears in more than one parameter group")
                seen.add(id(p))
            flat = FlatGroup(group["params"])
            self.param_groups.append(group)
            self.flat_groups.append(flat)
            self.state.append({"step": 0, **self._new_state(flat)})

    def zero_grad(self):
        for flat in self.flat_groups:
            flat.reattach()
            flat.grad.fill(0)

    def step(self):
        if not all(p.requires_grad for group in self.param_groups for p in group["params"]):
            raise RuntimeError(f"{type(self).__name__}: a parameter was frozen after the optimizer was built;"
                               " build the optimizer after freezing (it leaves frozen parameters out)")
        for group, flat, state in zip(self.param_groups, self.flat_groups, self.state):
            flat.reattach()
            state["step"] += 1
            self._update(group, flat, state)

    def _new_state(self, flat) -> dict:
        raise NotImplementedError

    def _update(self, group, flat, state):
        raise NotImplementedError

    # --- saving and restoring ------------------------------------------------
    def state_dict(self) -> dict:
        """Settings and state of every group; arrays are the live buffers (as in PyTorch), not copies."""
        groups, first = [], 0
        for group in self.param_groups:
            settings = {key: value for key, value in group.items() if key != "params"}
            settings["params"] = list(range(first, first + len(group["params"])))
            settings["shapes"] = [p.shape for p in group["params"]]
            first += len(group["params"])
            groups.append(settings)
        return {"state": self.state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore settings (lr, betas, ...) and state, copying arrays into this optimizer's buffers."""
        saved_groups = state_dict["param_groups"]
        own_shapes = [[p.shape for p in group["params"]] for group in self.param_groups]
        saved_shapes = [[tuple(shape) for shape in group["shapes"]] for group in saved_groups]
        if own_shapes != saved_shapes:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the saved parameter groups have shapes {saved_shapes},"
                f" this optimizer's are {own_shapes}"
            )
        for group, saved in zip(self.param_groups, saved_groups):
            group.update({key: value for key, value in saved.items() if key not in ("params", "shapes")})
        for state, saved in zip(self.state, state_dict["state"]):
            for key, value in saved.items():
                if isinstance(state[key], np.ndarray):
                    np.copyto(state[key], value)
                else:
                    state[key] = value


def _trainable(settings: dict) -> dict:
    """A group's ``params`` (and their ``names``, if given) without the frozen ones."""
    params = list(settings["params"])
    keep = [p.requires_grad for p in params]
    trainable = {"params": [p for p, kept in zip(params, keep) if kept]}
    if "names" in settings:
        trainable["names"] = [name for name, kept in zip(settings["names"], keep) if kept]
    return trainable


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and (L2) weight decay.

    SGD is the simple reference: its step allocates a few temporaries.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and momentum <= 0:
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0, got momentum={momentum}")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)

    def _new_state(self, flat):
        return {"momentum_buffer": np.zeros_like(flat.data)}

    def _update(self, group, flat, state):
        lr, momentum, weight_decay = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        direction = flat.grad + weight_decay * flat.data if weight_decay else flat.grad
        if momentum:
            buffer = state["momentum_buffer"]
            buffer *= momentum
            buffer += direction
            direction = direction + momentum * buffer if group["nesterov"] else buffer
        np.multiply(direction, lr, out=flat.scratch)
        flat.data -= flat.scratch


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is an L2 term added to the gradient."""

    decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def _new_state(self, flat):
        return {"exp_avg": np.zeros_like(flat.data), "exp_avg_sq": np.zeros_like(flat.data)}

    def _update(self, group, flat, state):
        beta1, beta2 = (float(beta) for beta in group["betas"])
        step = state["step"]
        update = partial(_adam_update, lr=float(group["lr"]), beta1=beta1, beta2=beta2, eps=float(group["eps"]),
                         weight_decay=float(group["weight_decay"]), decoupled=self.decoupled_weight_decay,
                         bias_correction1=1 - beta1**step, bias_correction2=1 - beta2**step)
        map_rows(update, flat.data, flat.grad, state["exp_avg"], state["exp_avg_sq"], flat.scratch)


def _adam_update(params, grad, exp_avg, exp_avg_sq, scratch, lr, beta1, beta2, eps, weight_decay, decoupled,
                 bias_correction1, bias_correction2):
    """One Adam(W) step on one cache-sized piece of the flat buffers (run over all pieces by ``map_rows``)."""
    if weight_decay and decoupled:
        params *= 1 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * params  # L2 (a temporary: plain Adam is not the hot path)
    exp_avg *= beta1                          # m = b1 m + (1 - b1) g
    exp_avg += np.multiply(grad, 1 - beta1, out=scratch)
    exp_avg_sq *= beta2                       # v = b2 v + (1 - b2) g^2
    np.square(grad, out=scratch)
    scratch *= 1 - beta2
    exp_avg_sq += scratch
    # p -= lr/(1 - b1^t) m / (sqrt(v)/sqrt(1 - b2^t) + eps), with sqrt(1 - b2^t) moved out of the
    # denominator into the step's scalar: = lr sqrt(1 - b2^t)/(1 - b1^t) m / (sqrt(v) + eps sqrt(1 - b2^t)),
    # one pass over the buffers fewer (13 for AdamW, not 14): 0.97x the time on 10.6 M parameters
    root_correction2 = math.sqrt(bias_correction2)
    denominator = np.sqrt(exp_avg_sq, out=scratch)
    denominator += eps * root_correction2
    update = np.divide(exp_avg, denominator, out=scratch)
    update *= lr * root_correction2 / bias_correction1
    params -= update


class AdamW(Adam):
    """Adam with decoupled weight decay: each step first shrinks every weight by the factor (1 - lr wd)."""

    decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def decays_matrices(name: str, param) -> bool:
    """The usual rule: decay every weight matrix (ndim >= 2), not biases or LayerNorm gains (ndim 1)."""
    return param.ndim >= 2


def configure_param_groups(model, weight_decay, decays=decays_matrices):
    """Two groups of the trainable parameters: those ``decays(name, param)`` picks, with ``weight_decay``; the rest without.

    Matrices (Linear weights, embedding tables) mix or place features and are
    what overfits; a bias or a LayerNorm gain shifts or scales one feature,
    and decaying it towards zero only hurts.  Deciding by shape rather than
    by layer type keeps the rule true for any layer, a LoRA adapter or a new
    head included.  Frozen parameters are left out (nothing trains them).
    Each group lists its parameters' ``names``, which the optimizer's state
    keeps, so ``param_groups_by_name`` can rebuild the same groups later.
    Pass the result to an optimizer: ``AdamW(configure_param_groups(model, 0.1), lr=...)``.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    decayed = [(name, p) for name, p in trainable if decays(name, p)]
    kept = [(name, p) for name, p in trainable if not decays(name, p)]
    return [_group(decayed, weight_decay), _group(kept, 0.0)]


def param_groups_by_name(model, saved_groups) -> list[dict]:
    """Groups holding the parameters that ``saved_groups`` (an optimizer state's ``param_groups``) name."""
    named = dict(model.named_parameters())
    unknown = [name for group in saved_groups for name in group["names"] if name not in named]
    if unknown:
        raise KeyError(f"the optimizer state names parameters this model lacks: {', '.join(unknown)}")
    return [_group([(name, named[name]) for name in group["names"]], group["weight_decay"]) for group in saved_groups]


def _group(named_params, weight_decay) -> dict:
    return {"params": [p for _, p in named_params], "names": [name for name, _ in named_params],
            "weight_decay": weight_decay}


def clip_grad_norm(parameters, max_norm) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    The norm is taken over all gradients as one vector, sqrt(sum_i |g_i|^2),
    and the scale max_norm / (norm + 1e-6) is applied only when it is below 1
    (PyTorch's rule), so the update keeps its direction.  Returns the norm
    before clipping, which is worth logging: spikes show instability.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    scale = max_norm / (total_norm + 1e-6)
    if scale < 1:
        for g in grads:
            g *= scale
    return total_norm
