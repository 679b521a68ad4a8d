import torch

from gradsort.model import build_model, initial_state, make_mlp


def test_mlp_shape_is_40_256_256_10():
    model = make_mlp(40, 256, 2)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(256, 40), (256,), (256, 256), (256,), (10, 256), (10,)]
    assert model(torch.zeros(3, 40)).shape == (3, 10)


def test_initial_state_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = initial_state(0, 40, 16, 2)
    assert torch.equal(torch.rand(1), expected_next)
    b = initial_state(0, 40, 16, 2)
    c = initial_state(1, 40, 16, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_models_built_from_one_state_are_equal_and_independent():
    state = initial_state(3, 40, 16, 2)
    m1, m2 = build_model(state, 40, 16, 2), build_model(state, 40, 16, 2)
    for (k, p), q in zip(m1.state_dict().items(), m2.parameters()):
        assert torch.equal(p, q) and torch.equal(p, state[k])
    with torch.no_grad():
        next(m1.parameters()).add_(1.0)
    assert torch.equal(next(m2.parameters()), state["0.weight"])
