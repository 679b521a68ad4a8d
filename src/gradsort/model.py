"""The MLP of the study and its seeded initial weights."""

import torch
from torch import nn

from gradsort.data import NUM_CLASSES


def make_mlp(input_size: int, hidden_size: int, hidden_layers: int) -> nn.Sequential:
    """An MLP input -> hidden_layers x (Linear + ReLU) of width hidden_size -> 10 logits."""
    layers: list[nn.Module] = []
    width = input_size
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_size), nn.ReLU()]
        width = hidden_size
    layers.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*layers)


def initial_state(
    seed: int, input_size: int, hidden_size: int, hidden_layers: int
) -> dict[str, torch.Tensor]:
    """PyTorch's default initial weights of the MLP, drawn from ``seed``.

    The global RNG is left as it was, so every optimizer of a seed starts from these same
    tensors whatever ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_mlp(input_size, hidden_size, hidden_layers)
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def build_model(
    state: dict[str, torch.Tensor],
    input_size: int,
    hidden_size: int,
    hidden_layers: int,
    device: str = "cpu",
) -> nn.Sequential:
    """A fresh MLP holding a copy of ``state``."""
    model = make_mlp(input_size, hidden_size, hidden_layers)
    model.load_state_dict(state)
    return model.to(device)
