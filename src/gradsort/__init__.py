"""gradsort: can an optimizer learn from the distribution of gradient values alone?"""

from gradsort.optim import GradientTransformOptimizer, SortedGradientOptimizer, make_optimizer
from gradsort.transforms import TRANSFORMS, GradientTransform, make_transform

__all__ = [
    "TRANSFORMS",
    "GradientTransform",
    "GradientTransformOptimizer",
    "SortedGradientOptimizer",
    "make_optimizer",
    "make_transform",
]
