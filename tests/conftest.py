import pytest
import torch

from gradsort.model import make_mlp

# One thread: the tests run beside other work on small machines, where threads stall each other.
torch.set_num_threads(1)


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return make_mlp(40, 32, 2)


def batches(n_steps, seed=1, n=64):
    """Deterministic (x, y) batches for the 40-input MLP."""
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 40, generator=g), torch.randint(0, 10, (n,), generator=g))
        for _ in range(n_steps)
    ]
