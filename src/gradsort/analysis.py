"""How a gradient transform changes what the base optimizer sees, step after step.

Sorting puts the most negative value of a tensor's gradient on its first coordinate and the
most positive on its last, at every step. Each coordinate's gradient sign then barely
changes across steps, so Adam's normalised direction m / sqrt(v) stays near +-1 and every
weight moves by about the full learning rate per step, always the same way. ``sign_stats``
measures that along a real training run.
"""

import math

import torch
from torch.nn import functional as F

from gradsort.data import Split


def random_sign_consistency(steps: int) -> float:
    """E|mean of ``steps`` independent fair +-1 signs|: the consistency of pure noise."""
    # E|S_n| for a simple random walk of n steps, exact: n * C(n-1, floor((n-1)/2)) / 2^(n-1).
    half = (steps - 1) // 2
    log_ratio = math.lgamma(steps) - math.lgamma(half + 1) - math.lgamma(steps - half)
    return math.exp(log_ratio - (steps - 1) * math.log(2))


def sign_stats(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_split: Split,
    steps: int,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Train ``model`` for ``steps`` mini-batches and measure the gradients the base
    optimizer received (after the transform, which acts on ``p.grad`` in place).

    Over all weight coordinates (biases left out):

    - ``sign_consistency``: the mean over coordinates of |mean over steps of sign(g)|;
      1 when every coordinate keeps its sign, ``random_sign_consistency(steps)`` for noise.
    - ``path_coherence``: |theta_T - theta_0|_1 divided by the sum over steps of |step|_1;
      1 when every coordinate moves the same way at every step.
    - ``adam_direction``: the mean |m_hat / (sqrt(v_hat) + eps)| at the end, for bases
      that keep Adam's moments (NaN otherwise); 1 is the largest step Adam takes.
    """
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    start = [p.detach().clone() for p in weights]
    sign_sums = [torch.zeros_like(p) for p in weights]
    travelled = 0.0
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_split), generator=generator)
    model.train()
    for step in range(steps):
        lo = step * batch_size % len(train_split)
        idx = order[lo : lo + batch_size]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(train_split.x[idx]), train_split.y[idx]).backward()
        before = [p.detach().clone() for p in weights]
        optimizer.step()
        for total, p, b in zip(sign_sums, weights, before):
            total += torch.sign(p.grad)
            travelled += (p.detach() - b).abs().sum().item()
    n = sum(p.numel() for p in weights)
    consistency = sum((s.abs() / steps).sum().item() for s in sign_sums) / n
    moved = sum((p.detach() - s).abs().sum().item() for p, s in zip(weights, start))
    return {
        "sign_consistency": consistency,
        "path_coherence": moved / travelled if travelled > 0 else math.nan,
        "adam_direction": _adam_direction(optimizer, weights),
    }


def _adam_direction(optimizer: torch.optim.Optimizer, weights: list[torch.Tensor]) -> float:
    state = optimizer.state
    if not all(p in state and "exp_avg_sq" in state[p] for p in weights):
        return math.nan
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    total, n = 0.0, 0
    for p in weights:
        s = state[p]
        t = float(s["step"])
        m_hat = s["exp_avg"] / (1 - beta1**t)
        v_hat = s["exp_avg_sq"] / (1 - beta2**t)
        total += (m_hat / (v_hat.sqrt() + group["eps"])).abs().sum().item()
        n += p.numel()
    return total / n
