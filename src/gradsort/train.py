"""The training loop and its evaluation."""

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from gradsort.batched import supports, train_batched
from gradsort.data import Split
from gradsort.history import DivergedError, History
from gradsort.model import build_model, initial_state
from gradsort.optim import make_optimizer

if TYPE_CHECKING:
    from gradsort.params import ModelParams, OptimizerSpec


@torch.no_grad()
def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``."""
    model.eval()
    logits = model(split.x)
    loss = F.cross_entropy(logits, split.y).item()
    acc = (logits.argmax(dim=1) == split.y).float().mean().item()
    return loss, acc


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_split: Split,
    val_split: Split,
    epochs: int,
    batch_size: int,
    seed: int,
    on_epoch: Callable[[int, History], None] | None = None,
    test_split: Split | None = None,
) -> History:
    """Train for ``epochs`` epochs of shuffled mini-batches and evaluate after each.

    The batch order is drawn from ``seed`` alone, so optimizers trained with the same seed see
    the same batches. Raises DivergedError at the first epoch whose loss is not finite. With
    a ``test_split``, the trained model is scored on it once, at the end.
    """
    generator = torch.Generator().manual_seed(seed)
    history = History(initial_val_loss=evaluate(model, val_split)[0])
    n = len(train_split)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(train_split.x.device)
        total = torch.zeros((), device=train_split.x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(train_split.x[idx]), train_split.y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = total.item() / n
        val_loss, val_acc = evaluate(model, val_split)
        history.train_loss.append(train_loss)
        history.val_loss.append(val_loss)
        history.val_acc.append(val_acc)
        if not math.isfinite(train_loss):
            raise DivergedError(epoch, "train loss", history)
        if not math.isfinite(val_loss):
            raise DivergedError(epoch, "validation loss", history)
        if on_epoch is not None:
            on_epoch(epoch, history)
    if test_split is not None:
        history.test_loss, history.test_acc = evaluate(model, test_split)
    return history


def train_from(
    state: dict[str, torch.Tensor],
    model: "ModelParams",
    spec: "OptimizerSpec",
    lr: float,
    train_split: Split,
    val_split: Split,
    epochs: int,
    batch_size: int,
    seed: int,
    test_split: Split | None = None,
) -> History:
    """Train a fresh MLP holding ``state`` with the optimizer ``spec`` at ``lr``.

    ``seed`` draws the batch order and seeds the transform's generator.
    """
    net = build_model(
        state,
        train_split.x.shape[1],
        model.hidden_size,
        model.hidden_layers,
        device=train_split.x.device,
    )
    optimizer = make_optimizer(net.parameters(), spec.base, lr, spec.transform, seed, **spec.kwargs)
    return train(
        net, optimizer, train_split, val_split, epochs, batch_size, seed, test_split=test_split
    )


def train_many(
    states: list[dict[str, torch.Tensor]],
    model: "ModelParams",
    spec: "OptimizerSpec",
    lrs: list[float],
    seeds: list[int],
    train_split: Split,
    val_split: Split,
    epochs: int,
    batch_size: int,
    test_split: Split | None = None,
) -> list[History | DivergedError]:
    """Train model i from ``states[i]`` at ``lrs[i]`` with seed ``seeds[i]``, all of them.

    Bases with a batched update train together in one computation (``gradsort.batched``);
    the others one after the other. Each result is a History or the run's DivergedError.
    """
    if supports(spec.base, spec.kwargs):
        return train_batched(
            states,
            spec.base,
            spec.transform,
            spec.kwargs,
            lrs,
            seeds,
            train_split,
            val_split,
            epochs,
            batch_size,
            test_split,
        )
    results: list[History | DivergedError] = []
    for state, lr, seed in zip(states, lrs, seeds):
        try:
            results.append(
                train_from(
                    state,
                    model,
                    spec,
                    lr,
                    train_split,
                    val_split,
                    epochs,
                    batch_size,
                    seed,
                    test_split,
                )
            )
        except DivergedError as err:
            results.append(err)
    return results


def compare(
    model: "ModelParams",
    optimizers: dict[str, "OptimizerSpec"],
    best_lrs: dict[str, float],
    train_split: Split,
    val_split: Split,
    epochs: int,
    batch_size: int,
    seeds: int,
    on_run: Callable[[str, int, History, DivergedError | None], None] | None = None,
    test_split: Split | None = None,
) -> dict[str, list[History]]:
    """Train every optimizer at its best lr for each seed in ``range(seeds)``.

    Within a seed every optimizer starts from the same initial weights and sees the same
    batches, so differences between optimizers are paired. A diverged run keeps the epochs
    it finished. With a ``test_split`` every trained model is scored on it once.
    """
    features = train_split.x.shape[1]
    states = [
        initial_state(seed, features, model.hidden_size, model.hidden_layers)
        for seed in range(seeds)
    ]
    histories: dict[str, list[History]] = {}
    for name, spec in optimizers.items():
        results = train_many(
            states,
            model,
            spec,
            [best_lrs[name]] * seeds,
            list(range(seeds)),
            train_split,
            val_split,
            epochs,
            batch_size,
            test_split,
        )
        histories[name] = []
        for seed, result in enumerate(results):
            error = result if isinstance(result, DivergedError) else None
            history = result.history if error else result
            histories[name].append(history)
            if on_run is not None:
                on_run(name, seed, history, error)
    return histories
