"""Many MLPs trained in one batched computation: same numbers as separate runs, less overhead.

The k models of a batch keep their own weights, learning rate, optimizer state, transform and
batch order. Their weights are stacked along a leading model axis, so a forward pass is one
batched matmul per layer and an optimizer step is a few whole-stack tensor operations. Each
gradient transform acts on one model's own tensor, never across models.

A batched run equals k separate ``train.train_from`` runs to float tolerance (the order of
floating-point operations differs: batched matmuls, a per-model learning rate tensor).
"""

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.nn import functional as F

from gradsort.data import Split
from gradsort.history import DivergedError, History
from gradsort.transforms import GradientTransform, make_transform

# Base optimizers with a batched update below, and the keyword arguments it implements.
# Limitation: other bases and keywords (amsgrad, maximize, ...) train one model at a time.
BATCHED_KWARGS = {
    "adam": {"betas", "eps", "weight_decay"},
    "adamw": {"betas", "eps", "weight_decay"},
    "sgd": {"momentum", "dampening", "weight_decay", "nesterov"},
}


def supports(base: str, kwargs: dict) -> bool:
    """Whether ``base`` with ``kwargs`` has a batched update here."""
    return base in BATCHED_KWARGS and set(kwargs) <= BATCHED_KWARGS[base]


class StackedMLP:
    """k MLPs with the layout of ``model.make_mlp``, weights stacked along dim 0."""

    def __init__(self, states: Sequence[dict[str, torch.Tensor]], device: str = "cpu") -> None:
        self.params = [
            torch.stack([state[name] for state in states]).to(device).requires_grad_()
            for name in states[0]
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[k, batch, classes]`` for inputs ``[k, batch, features]``."""
        layers = list(zip(self.params[0::2], self.params[1::2]))
        for i, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            if i < len(layers) - 1:
                x = F.relu(x)
        return x


class BatchedUpdate:
    """The update rule of ``torch.optim.<base>`` applied to stacked params, lr per model."""

    def __init__(self, base: str, params: list[torch.Tensor], lrs: Sequence[float], **kwargs):
        if not supports(base, kwargs):
            raise ValueError(f"no batched update for {base} with {sorted(kwargs)}")
        self.base = base
        self.params = params
        self.kwargs = kwargs
        self.lrs = torch.tensor(lrs, dtype=torch.float64)
        self.step_count = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    def _per_model(self, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        shape = (len(values),) + (1,) * (like.dim() - 1)
        return values.to(dtype=like.dtype, device=like.device).view(shape)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.step_count += 1
        for p, grad, state in zip(self.params, grads, self.state):
            if self.base == "sgd":
                self._sgd(p, grad, state)
            else:
                self._adam(p, grad, state)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        beta1, beta2 = self.kwargs.get("betas", (0.9, 0.999))
        eps = self.kwargs.get("eps", 1e-8)
        weight_decay = self.kwargs.get("weight_decay", 0.01 if self.base == "adamw" else 0.0)
        if weight_decay != 0:
            if self.base == "adamw":
                p.mul_(self._per_model(1 - self.lrs * weight_decay, p))
            else:
                grad = grad.add(p, alpha=weight_decay)
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2_sqrt = (1 - beta2**self.step_count) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        step_size = self._per_model(-(self.lrs / bias_correction1), p)
        p.add_(exp_avg.div(denom).mul_(step_size))

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        momentum = self.kwargs.get("momentum", 0.0)
        dampening = self.kwargs.get("dampening", 0.0)
        weight_decay = self.kwargs.get("weight_decay", 0.0)
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        if momentum != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                state["momentum_buffer"].mul_(momentum).add_(grad, alpha=1 - dampening)
            buf = state["momentum_buffer"]
            grad = grad.add(buf, alpha=momentum) if self.kwargs.get("nesterov") else buf
        p.add_(grad * self._per_model(-self.lrs, p))


class BatchedTransform:
    """One gradient transform per model, applied to that model's slice of a stacked gradient."""

    def __init__(self, name: str, seeds: Sequence[int], threads: int = 2) -> None:
        self.name = name
        self.transforms: list[GradientTransform] = [make_transform(name, s) for s in seeds]
        self.threads = min(threads, len(seeds))
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def apply_(self, index: int, grad: torch.Tensor) -> None:
        if grad[0].numel() <= 1 or self.name == "none":
            return
        if self.name == "sort" and grad.device.type == "cpu" and grad.dtype == torch.float32:
            self._sort_rows_(grad.view(len(grad), -1).numpy())
        elif self.name == "sort":
            flat = grad.view(len(grad), -1)
            flat.copy_(torch.sort(flat, dim=1).values)
        else:
            for transform, row in zip(self.transforms, grad):
                transform.apply_(index, row)

    def _sort_rows_(self, rows: np.ndarray) -> None:
        # numpy releases the GIL while sorting, so row blocks sort in parallel threads.
        if self.pool is None:
            rows.sort(axis=1)
            return
        bounds = np.linspace(0, len(rows), self.threads + 1).astype(int)
        blocks = [rows[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
        list(self.pool.map(lambda block: block.sort(axis=1), blocks))


def _evaluate(net: StackedMLP, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        k = len(net.params[0])
        logits = net(split.x.expand(k, *split.x.shape))
        labels = split.y.expand(k, len(split.y))
        losses = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=1)
        accs = (logits.argmax(dim=2) == labels).float().mean(dim=1)
    return losses, accs


def train_batched(
    states: Sequence[dict[str, torch.Tensor]],
    base: str,
    transform: str,
    kwargs: dict,
    lrs: Sequence[float],
    seeds: Sequence[int],
    train_split: Split,
    val_split: Split,
    epochs: int,
    batch_size: int,
    test_split: Split | None = None,
) -> list[History | DivergedError]:
    """Train model i from ``states[i]`` at ``lrs[i]`` with batch order and transform seed
    ``seeds[i]``, all k at once; returns each model's History, or its DivergedError.

    A model whose loss turns non-finite keeps the epochs it finished and is reported as
    diverged; the others train on unaffected (the models share no arithmetic). With a
    ``test_split`` each model that did not diverge is scored on it once, at the end.
    """
    k = len(states)
    device = train_split.x.device
    net = StackedMLP(states, device)
    update = BatchedUpdate(base, net.params, lrs, **kwargs)
    transforms = BatchedTransform(transform, seeds, threads=torch.get_num_threads())
    generators = {s: torch.Generator().manual_seed(s) for s in dict.fromkeys(seeds)}
    initial_losses = _evaluate(net, val_split)[0].tolist()
    histories = [History(initial_val_loss=loss) for loss in initial_losses]
    diverged: list[DivergedError | None] = [None] * k
    n = len(train_split)

    try:
        for epoch in range(1, epochs + 1):
            # Models that share a seed share the batch order, as they would in separate runs.
            orders = {s: torch.randperm(n, generator=g) for s, g in generators.items()}
            order = torch.stack([orders[s] for s in seeds]).to(device)
            total = torch.zeros(k, device=device)
            for start in range(0, n, batch_size):
                idx = order[:, start : start + batch_size]
                logits = net(train_split.x[idx])
                losses = F.cross_entropy(
                    logits.transpose(1, 2), train_split.y[idx], reduction="none"
                ).mean(dim=1)
                grads = list(torch.autograd.grad(losses.sum(), net.params))
                if transform != "none":  # the transforms act on each model's row-major values
                    grads = [g.contiguous() for g in grads]
                    for i, grad in enumerate(grads):
                        transforms.apply_(i, grad)
                update.step(grads)
                total += losses.detach() * idx.shape[1]
            train_losses = (total / n).tolist()
            val_losses, val_accs = (t.tolist() for t in _evaluate(net, val_split))
            for i in range(k):
                if diverged[i] is not None:
                    continue
                history = histories[i]
                history.train_loss.append(train_losses[i])
                history.val_loss.append(val_losses[i])
                history.val_acc.append(val_accs[i])
                if not math.isfinite(train_losses[i]):
                    diverged[i] = DivergedError(epoch, "train loss", history)
                elif not math.isfinite(val_losses[i]):
                    diverged[i] = DivergedError(epoch, "validation loss", history)
            # Limitation: a diverged model stays in the batch, computing NaNs, until all have.
            if all(d is not None for d in diverged):
                break
    finally:
        transforms.close()
    if test_split is not None:
        test_losses, test_accs = (t.tolist() for t in _evaluate(net, test_split))
        for i, history in enumerate(histories):
            if diverged[i] is None:
                history.test_loss, history.test_acc = test_losses[i], test_accs[i]
    return [d if d is not None else h for h, d in zip(histories, diverged)]
