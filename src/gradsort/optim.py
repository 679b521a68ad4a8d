"""A gradient transform composed in front of any ``torch.optim`` optimizer."""

import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch

from gradsort.transforms import GradientTransform, make_transform

_TRANSFORM_KEY = "gradient_transform"


def base_optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    """Every optimizer class of ``torch.optim``, keyed by its lower-case class name."""
    return {
        name.lower(): cls
        for name, cls in vars(torch.optim).items()
        if inspect.isclass(cls)
        and issubclass(cls, torch.optim.Optimizer)
        and cls is not torch.optim.Optimizer
    }


def base_optimizer_kwargs(name: str) -> set[str]:
    """The keyword arguments the base optimizer ``name`` accepts besides ``params``."""
    signature = inspect.signature(base_optimizers()[name])
    return {p for p in signature.parameters if p != "params"}


def make_base_optimizer(name: str, params: Iterable, lr: float, **kwargs) -> torch.optim.Optimizer:
    """Build ``torch.optim.<Name>(params, lr=lr, **kwargs)`` from its lower-case name."""
    classes = base_optimizers()
    if name not in classes:
        raise ValueError(f"base optimizer must be one of {sorted(classes)}, got {name!r}")
    allowed = base_optimizer_kwargs(name) - {"lr"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"{name} takes no argument {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    return classes[name](params, lr=lr, **kwargs)


class GradientTransformOptimizer(torch.optim.Optimizer):
    """Apply a per-tensor gradient transform, then let ``base`` take its step.

    The wrapper owns no parameters of its own: ``param_groups``, ``state`` and ``defaults``
    are the base optimizer's objects, so LR schedulers, ``GradScaler`` and checkpoints act on
    the base optimizer, which is the one that updates the parameters. ``state_dict`` holds
    the base optimizer's state plus the transform's (fixed permutations, generator state).

    Args:
        base: the optimizer that updates the parameters, e.g. ``torch.optim.Adam(...)``.
        transform: a ``GradientTransform`` or its name: ``none``, ``sort``, ``shuffle`` or
            ``permute``.
        seed: seed of the transform's generator (``shuffle`` and ``permute``); default 0.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        transform: GradientTransform | str = "sort",
        seed: int = 0,
    ) -> None:
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"base must be a torch.optim.Optimizer, got {type(base).__name__}")
        if isinstance(transform, str):
            transform = make_transform(transform, seed)
        if not isinstance(transform, GradientTransform):
            raise TypeError(
                f"transform must be a GradientTransform or its name, got {type(transform).__name__}"
            )
        self.base = base
        self.transform = transform

        # What torch.optim.Optimizer.__init__ sets up, minus the parameters, which the base owns.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    # The base optimizer replaces its state and groups on load_state_dict, so these are
    # looked up on every access instead of being copied once.
    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict]) -> None:
        self.base.param_groups = value

    @property
    def state(self) -> dict:
        return self.base.state

    @state.setter
    def state(self, value: dict) -> None:
        self.base.state = value

    @property
    def defaults(self) -> dict:
        return self.base.defaults

    @defaults.setter
    def defaults(self, value: dict) -> None:
        self.base.defaults = value

    # Limitation: a global hook (torch.optim.optimizer.register_optimizer_step_pre_hook) runs
    # twice per step, once for the wrapper and once for the base; nested wrappers share the
    # state_dict key of the transform, so only the outer one's is kept.
    def __getstate__(self) -> dict:
        return {"base": self.base, "transform": self.transform}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, transform={self.transform!r})"

    def transform_grads(self) -> None:
        """Transform the gradient of every parameter that has one, in place, once each."""
        grads = []
        seen = set()
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and id(p) not in seen:
                    seen.add(id(p))
                    grads.append((index, p))
                index += 1
        for _, p in grads:
            if p.grad.is_sparse or p.grad.layout != torch.strided:
                raise ValueError(
                    f"sparse gradients are not supported (parameter of shape {tuple(p.shape)})"
                )
            if p.grad.is_complex():
                raise ValueError(
                    f"complex gradients are not supported (parameter of shape {tuple(p.shape)})"
                )
        with torch.no_grad():
            for i, p in grads:
                if p.grad.numel() > 1:
                    if p.grad.is_neg() or any(
                        stride == 0 and size > 1
                        for stride, size in zip(p.grad.stride(), p.grad.shape)
                    ):
                        # A hand-assigned expanded or negated view cannot be written in
                        # place; the base optimizer gets an ordinary copy instead.
                        p.grad = p.grad.resolve_neg().contiguous()
                    self.transform.apply_(i, p.grad)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Transform the gradients, then step the base optimizer; returns the closure's loss.

        With a closure, every evaluation the base optimizer makes (one for Adam, several for
        LBFGS) is followed by the transform, so the base only ever sees transformed gradients.
        """
        if closure is None:
            self.transform_grads()
            return self.base.step()

        def transformed_closure():
            with torch.enable_grad():
                loss = closure()
            self.transform_grads()
            return loss

        return self.base.step(transformed_closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.base.add_param_group(param_group)

    def state_dict(self) -> dict:
        """The base optimizer's state dict plus the transform's state (and its name)."""
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        state = self.base.state_dict()
        state[_TRANSFORM_KEY] = {"name": self.transform.name, **self.transform.state_dict()}
        for hook in self._optimizer_state_dict_post_hooks.values():
            state = hook(self, state) or state
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Load what ``state_dict`` returned; the base keeps its own loading rules.

        A state saved with another transform is refused before anything is loaded.
        """
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            state_dict = hook(self, state_dict) or state_dict
        transform_state = dict(state_dict.pop(_TRANSFORM_KEY, {"name": self.transform.name}))
        saved = transform_state.pop("name", None)
        if saved != self.transform.name:
            raise ValueError(
                f"state_dict was saved with transform {saved!r}, this optimizer uses "
                f"{self.transform.name!r}"
            )
        if transform_state:
            self.transform.load_state_dict(transform_state)
        self.base.load_state_dict(state_dict)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)


class SortedGradientOptimizer(GradientTransformOptimizer):
    """Sort each parameter's gradient values ascending before ``base`` takes its step.

    ``SortedGradientOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3))`` keeps the
    distribution of every gradient tensor and discards which parameter each value belongs to.
    """

    def __init__(self, base: torch.optim.Optimizer) -> None:
        super().__init__(base, transform="sort")


def make_optimizer(
    params: Iterable, base: str, lr: float, transform: str = "none", seed: int = 0, **kwargs
) -> GradientTransformOptimizer:
    """Build the base optimizer by name behind the named transform (``none`` included)."""
    return GradientTransformOptimizer(
        make_base_optimizer(base, params, lr, **kwargs), transform, seed
    )
