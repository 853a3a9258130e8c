"""Module and Parameter: how a network knows its own weights.

A ``Parameter`` is a Tensor that is a weight: it always requires a gradient.
A ``Module`` is a piece of network (a layer, a block, a whole model).  Setting
an attribute to a Parameter or to another Module *registers* it, by name, in
the order assigned (``__setattr__`` below), so the model can walk its own
tree:

    model.named_parameters()  ->  ("h.0.attn.c_attn.weight", Parameter), ...

The dotted names are the paths of attributes, which is why the GPT's layer
names are chosen to be GPT-2's: the names *are* the checkpoint format.

From the tree come the rest: ``parameters()`` (each shared Parameter once,
so a tied weight is neither counted nor updated twice), ``state_dict()`` /
``load_state_dict()``, ``train()`` / ``eval()`` (the ``training`` flag read
by dropout) and ``zero_grad()``.

Two rules keep other code's views of the weights valid.  ``load_state_dict``
copies new values *into* the existing arrays (``np.copyto``), never rebinds
``param.data``; and ``zero_grad`` fills gradients with zero in place.  The
optimizers rely on both: they make every ``param.data`` and ``param.grad`` a
view into one flat buffer (see ``npllm.optim``).

Surgery, for fine-tuning: ``requires_grad_(False)`` freezes a sub-tree
(its parameters get no gradient, and optimizers leave them out), and
``get_submodule`` / ``set_submodule`` find and replace a piece by its
dotted name (a new classification head, a Linear wrapped with LoRA).

Left out on purpose: buffers (non-trainable state; GPT needs none), hooks,
and devices.
"""

from collections import OrderedDict

import numpy as np

from npllm.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a learnable weight of a Module: it requires a gradient unless frozen.

    ``Module.requires_grad_(False)`` freezes it: the engine then records no
    gradient for it and optimizers built afterwards leave it out.
    """

    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self):
        frozen = ", frozen" if not self.requires_grad else ""
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{frozen})"


class Module:
    """Base class of every layer and model: subclasses set attributes in ``__init__`` and write ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning attributes (assigning {name!r})"
            )
        if not isinstance(value, Parameter):
            self._parameters.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value  # a reassigned name keeps its place in the order
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- walking the tree -------------------------------------------------
    def named_modules(self, prefix=""):
        """Yield (dotted name, module) for this module and every module below it, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [module for _, module in self.named_modules()]

    def named_parameters(self):
        """(dotted name, Parameter) pairs; a Parameter shared by two modules appears once, under its first name."""
        seen = set()
        for prefix, module in self.named_modules():
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{prefix}.{name}" if prefix else name), param

    def parameters(self):
        return [param for _, param in self.named_parameters()]

    def named_generators(self):
        """(dotted name, np.random.Generator) for every random generator a module below holds (dropout's masks)."""
        for prefix, module in self.named_modules():
            for name, value in vars(module).items():
                if isinstance(value, np.random.Generator):
                    yield (f"{prefix}.{name}" if prefix else name), value

    def num_parameters(self) -> int:
        return sum(param.size for param in self.parameters())

    # --- surgery: freezing, and replacing a piece ---------------------------
    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter of this module and the modules below it; returns self.

        A frozen parameter takes part in forward as before but receives no
        gradient, and an optimizer built afterwards neither moves nor decays
        it (fine-tuning the last blocks only; LoRA, which freezes the base model).
        """
        for param in self.parameters():
            param.requires_grad = bool(requires_grad)
            if not requires_grad:
                param.grad = None  # a stale gradient would still count in clipping
        return self

    def get_submodule(self, name: str) -> "Module":
        """The module at dotted path ``name`` (``"h.0.attn"``); ``""`` is this module."""
        module = self
        for part in name.split(".") if name else ():
            if part not in module._modules:
                raise KeyError(f"{type(self).__name__} has no sub-module {name!r} ({part!r} is not in"
                               f" {type(module).__name__}: {', '.join(module._modules) or 'no sub-modules'})")
            module = module._modules[part]
        return module

    def set_submodule(self, name: str, module: "Module"):
        """Replace the module at dotted path ``name`` by ``module`` (a new head, a LoRA-wrapped layer).

        The new module takes the old one's place in the order, so names
        (``state_dict`` keys) stay as they were, now under the new module.
        """
        parent_name, _, child = name.rpartition(".")
        parent = self.get_submodule(parent_name)
        if child not in parent._modules:
            raise KeyError(f"{type(self).__name__} has no sub-module {name!r} to replace")
        if not isinstance(module, Module):
            raise TypeError(f"set_submodule: {name!r} must be replaced by a Module, got {type(module).__name__}")
        setattr(parent, child, module)

    # --- state ------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> the parameter's array itself (not a copy, as in PyTorch): copy it to keep a snapshot."""
        return OrderedDict((name, param.data) for name, param in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy ``state``'s arrays into this module's parameters, in place.

        Shapes must match exactly.  With ``strict`` (the default) the keys must
        match too; otherwise only the common keys are loaded.  Every problem
        is collected first and reported in one error naming the keys, so a
        failed load changes nothing.
        """
        own = dict(self.named_parameters())
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        misshaped = [
            f"{name}: checkpoint {np.shape(state[name])} vs model {own[name].shape}"
            for name in own if name in state and np.shape(state[name]) != own[name].shape
        ]
        problems = [f"mis-shaped keys: {', '.join(misshaped)}"] if misshaped else []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(unexpected)}")
        if problems:
            raise KeyError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        for name, param in own.items():
            if name in state:
                np.copyto(param.data, np.asarray(state[name]))

    # --- modes and gradients ----------------------------------------------
    def train(self, mode=True):
        """Set the ``training`` flag of this module and all below it (dropout is active only in training)."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Set every existing gradient to zero in place (keeping any optimizer's views valid)."""
        for param in self.parameters():
            if param.grad is not None:
                param.grad.fill(0)

    # --- printing -----------------------------------------------------------
    def extra_repr(self) -> str:
        """The arguments shown in this module's line of the repr; layers override it."""
        return ""

    def __repr__(self):
        count = self.num_parameters()
        lines = [f"{type(self).__name__}({self.extra_repr()})" + (f"  # {count:,} parameters" if count else "")]
        for name, child in self._modules.items():
            child_lines = repr(child).split("\n")
            lines.append(f"  ({name}): {child_lines[0]}")
            lines.extend("  " + line for line in child_lines[1:])
        return "\n".join(lines)


class ModuleList(Module):
    """A list of modules, registered under the names "0", "1", ... (GPT's blocks: h.0, h.1, ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self)), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def extra_repr(self):
        return f"{len(self)}"
