"""Per-tensor gradient transforms: each one permutes the values inside a gradient tensor.

A transform never mixes values across tensors, so the multiset of values of every
gradient (and with it the gradient norm) is unchanged; only the assignment of values to
parameters is. Transforms work in place and keep the gradient's shape and strides.
"""

import numpy as np
import torch

# numpy sorts these dtypes far faster than torch.sort on the CPU; others go to torch.sort.
# Limitation: bfloat16 gradients on the CPU take torch.sort, which is ~20x slower.
_NUMPY_SORTABLE = {torch.float32, torch.float64, torch.float16}


def sort_values_(grad: torch.Tensor) -> None:
    """Sort the values of ``grad`` ascending in row-major order, in place."""
    if grad.device.type == "cpu" and grad.dtype in _NUMPY_SORTABLE:
        if grad.is_contiguous():
            grad.detach().view(-1).numpy().sort()
        else:
            grad.copy_(
                torch.from_numpy(np.sort(grad.detach().reshape(-1).numpy())).view(grad.shape)
            )
    else:
        grad.copy_(torch.sort(grad.reshape(-1)).values.view(grad.shape))


def _apply_permutation_(grad: torch.Tensor, perm: torch.Tensor) -> None:
    grad.copy_(grad.reshape(-1)[perm.to(grad.device)].view(grad.shape))


class GradientTransform:
    """Base class: rearranges the values of one parameter's gradient in place.

    ``index`` is the parameter's position in the optimizer's ``param_groups`` order, which
    keys any per-parameter state so that ``state_dict`` survives a fresh process.
    """

    name = "none"

    def apply_(self, index: int, grad: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SortTransform(GradientTransform):
    """Sort each gradient's values ascending and lay them back in the tensor's shape."""

    name = "sort"

    def apply_(self, index: int, grad: torch.Tensor) -> None:
        sort_values_(grad)


class _SeededTransform(GradientTransform):
    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class ShuffleTransform(_SeededTransform):
    """Reassign each gradient's values by a fresh random permutation at every step."""

    name = "shuffle"

    def apply_(self, index: int, grad: torch.Tensor) -> None:
        _apply_permutation_(grad, torch.randperm(grad.numel(), generator=self.generator))


class PermuteTransform(_SeededTransform):
    """Reassign each gradient's values by one random permutation, drawn at its first step."""

    name = "permute"

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.permutations: dict[int, torch.Tensor] = {}

    def apply_(self, index: int, grad: torch.Tensor) -> None:
        perm = self.permutations.get(index)
        if perm is None or perm.numel() != grad.numel():
            perm = torch.randperm(grad.numel(), generator=self.generator)
            self.permutations[index] = perm
        _apply_permutation_(grad, perm)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "permutations": dict(self.permutations)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.permutations = {int(i): perm.clone() for i, perm in state["permutations"].items()}


TRANSFORMS: dict[str, type[GradientTransform]] = {
    cls.name: cls for cls in (GradientTransform, SortTransform, ShuffleTransform, PermuteTransform)
}


def make_transform(name: str, seed: int = 0) -> GradientTransform:
    """Build a transform by its name; seeded transforms draw from ``seed``."""
    if name not in TRANSFORMS:
        raise ValueError(f"transform must be one of {sorted(TRANSFORMS)}, got {name!r}")
    cls = TRANSFORMS[name]
    return cls(seed) if issubclass(cls, _SeededTransform) else cls()
