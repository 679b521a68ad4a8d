import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gradsort import GradientTransformOptimizer, SortedGradientOptimizer, make_optimizer
from gradsort.model import make_mlp
from gradsort.optim import make_base_optimizer
from gradsort.transforms import TRANSFORMS, make_transform
from tests.conftest import batches

ROOT = Path(__file__).resolve().parents[1]
BASES = [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1}),
    (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}),
]


def run(model, optimizer, data):
    for x, y in data:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(("cls", "kwargs"), BASES, ids=lambda v: getattr(v, "__name__", ""))
def test_transform_none_matches_base_bit_for_bit(mlp, cls, kwargs):
    plain = copy.deepcopy(mlp)
    wrapped = copy.deepcopy(mlp)
    data = batches(30)
    run(plain, cls(plain.parameters(), **kwargs), data)
    run(wrapped, GradientTransformOptimizer(cls(wrapped.parameters(), **kwargs), "none"), data)
    for p, q in zip(plain.parameters(), wrapped.parameters()):
        assert torch.equal(p, q)


def test_sort_hands_the_base_each_gradient_sorted(mlp):
    x, y = batches(1)[0]
    F.cross_entropy(mlp(x), y).backward()
    original = {id(p): p.grad.clone() for p in mlp.parameters()}
    seen = {}

    base = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    base.register_step_pre_hook(
        lambda opt, args, kwargs: seen.update({id(p): p.grad.clone() for p in mlp.parameters()})
    )
    SortedGradientOptimizer(base).step()

    for p in mlp.parameters():
        got, before = seen[id(p)], original[id(p)]
        assert got.shape == before.shape
        assert torch.equal(got.flatten(), torch.sort(before.flatten()).values)
        assert not torch.equal(got, before)  # a random-looking gradient is not already sorted


def test_sorted_adam_equals_adam_on_presorted_gradients(mlp):
    """Oracle: Adam stepped on gradients sorted by torch.sort equals the wrapper."""
    ref = copy.deepcopy(mlp)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    opt = SortedGradientOptimizer(torch.optim.Adam(mlp.parameters(), lr=1e-3))
    for x, y in batches(10):
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        for p in ref.parameters():
            p.grad = torch.sort(p.grad.flatten()).values.view(p.shape).clone()
        ref_opt.step()
        opt.zero_grad()
        F.cross_entropy(mlp(x), y).backward()
        opt.step()
    for p, q in zip(ref.parameters(), mlp.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_transform_permutes_values(name):
    g = torch.randn(17, 5, generator=torch.Generator().manual_seed(3))
    out = g.clone()
    make_transform(name, seed=1).apply_(0, out)
    assert out.shape == g.shape
    assert torch.equal(torch.sort(out.flatten()).values, torch.sort(g.flatten()).values)
    assert torch.linalg.vector_norm(out) == torch.linalg.vector_norm(g)


def test_shuffle_draws_a_new_permutation_each_step_and_permute_keeps_one():
    g = torch.arange(100.0)
    shuffle, permute = make_transform("shuffle", 0), make_transform("permute", 0)
    s1, s2, p1, p2 = g.clone(), g.clone(), g.clone(), g.clone()
    shuffle.apply_(0, s1)
    shuffle.apply_(0, s2)
    permute.apply_(0, p1)
    permute.apply_(0, p2)
    assert not torch.equal(s1, s2)
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, g)
    # Reseeding reproduces the draws.
    again = g.clone()
    make_transform("shuffle", 0).apply_(0, again)
    assert torch.equal(again, s1)


def test_permute_uses_one_permutation_per_tensor():
    permute = make_transform("permute", 0)
    a, b = torch.arange(50.0), torch.arange(50.0)
    permute.apply_(0, a)
    permute.apply_(1, b)
    assert not torch.equal(a, b)


def test_wrapper_is_an_optimizer_sharing_the_base_objects(mlp):
    base = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    opt = SortedGradientOptimizer(base)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state
    run(mlp, opt, batches(2))
    opt.load_state_dict(opt.state_dict())
    assert opt.param_groups is base.param_groups
    assert opt.state is base.state
    assert len(base.state) == len(list(mlp.parameters()))


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=10),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, factor=0.5, patience=0
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_set_the_lr_the_base_uses(mlp, name):
    base = torch.optim.Adam(mlp.parameters(), lr=1e-2)
    opt = SortedGradientOptimizer(base)
    scheduler = SCHEDULERS[name](opt)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in batches(5):
            opt.zero_grad()
            F.cross_entropy(mlp(x), y).backward()
            opt.step()
            if name == "ReduceLROnPlateau":
                scheduler.step(1.0)  # a constant metric never improves
            else:
                scheduler.step()
            lrs.append(base.param_groups[0]["lr"])
    assert len(set(lrs)) > 1
    assert opt.param_groups[0]["lr"] == lrs[-1]


def test_step_with_closure_enables_grad_and_returns_loss(mlp):
    opt = SortedGradientOptimizer(torch.optim.Adam(mlp.parameters(), lr=1e-3))
    x, y = batches(1)[0]

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = F.cross_entropy(mlp(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.item() > 0
    weight = next(mlp.parameters())
    assert torch.equal(weight.grad.flatten(), torch.sort(weight.grad.flatten()).values)


def test_lbfgs_sees_sorted_gradients_at_every_evaluation(mlp):
    opt = SortedGradientOptimizer(torch.optim.LBFGS(mlp.parameters(), lr=0.1, max_iter=3))
    x, y = batches(1)[0]
    sorted_at_eval = []

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(mlp(x), y)
        loss.backward()
        return loss

    def check(optimizer, args, kwargs):
        sorted_at_eval.append(True)

    opt.base.register_step_pre_hook(check)
    opt.step(closure)
    for p in mlp.parameters():
        assert torch.equal(p.grad.flatten(), torch.sort(p.grad.flatten()).values)
    assert sorted_at_eval


def test_zero_grad_and_add_param_group_reach_the_base(mlp):
    params = list(mlp.parameters())
    base = torch.optim.Adam(params[:2], lr=1e-3)
    opt = SortedGradientOptimizer(base)
    opt.add_param_group({"params": params[2:], "lr": 1e-4})
    assert len(base.param_groups) == 2
    F.cross_entropy(mlp(batches(1)[0][0]), batches(1)[0][1]).backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in params)
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_grad_scaler_cpu(mlp):
    opt = SortedGradientOptimizer(torch.optim.Adam(mlp.parameters(), lr=1e-3))
    scaler = torch.amp.GradScaler("cpu")
    before = [p.clone() for p in mlp.parameters()]
    for x, y in batches(3):
        opt.zero_grad()
        scaler.scale(F.cross_entropy(mlp(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    assert all(not torch.equal(a, b) for a, b in zip(before, mlp.parameters()))


def train_steps(transform, steps, checkpoint=None):
    """Train the test MLP for ``steps``, optionally from a checkpoint saved after ``start``."""
    torch.manual_seed(0)
    model = make_mlp(40, 32, 2)
    opt = make_optimizer(model.parameters(), "adam", 1e-3, transform, seed=5)
    data = batches(8)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        opt.load_state_dict(checkpoint["optimizer"])
        data = data[int(checkpoint["steps"]) :]
    for x, y in data[:steps]:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


RESUME = """
import sys, torch
from tests.test_optim import train_steps
for transform in sys.argv[2:]:
    ckpt = torch.load(f"{sys.argv[1]}/{transform}.pt", weights_only=True)
    model, _ = train_steps(transform, 4, ckpt)
    torch.save(model.state_dict(), f"{sys.argv[1]}/{transform}.resumed.pt")
"""


def test_save_and_resume_in_a_fresh_process_is_bit_for_bit(tmp_path):
    transforms = ["sort", "shuffle", "permute"]
    for transform in transforms:
        model, opt = train_steps(transform, 4)
        checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "steps": 4}
        torch.save(checkpoint, tmp_path / f"{transform}.pt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", RESUME, str(tmp_path), *transforms], check=True, env=env)
    for transform in transforms:
        full, _ = train_steps(transform, 8)
        resumed = torch.load(tmp_path / f"{transform}.resumed.pt", weights_only=True)
        for key, value in full.state_dict().items():
            assert torch.equal(value, resumed[key]), (transform, key)
        # The checkpoint really differs from the end state: the resumed steps did the work.
        start = torch.load(tmp_path / f"{transform}.pt", weights_only=True)["model"]
        assert not torch.equal(start["0.weight"], resumed["0.weight"])


def test_state_dict_holds_transform_state(mlp):
    opt = make_optimizer(mlp.parameters(), "adam", 1e-3, "permute", seed=2)
    run(mlp, opt, batches(1))
    state = opt.state_dict()
    assert set(state["gradient_transform"]["permutations"]) == set(range(6))
    assert state["state"][0]["step"] == 1


def test_parameters_without_grad_are_skipped_and_get_no_state(mlp):
    frozen = mlp[0].weight
    frozen.requires_grad_(False)
    opt = SortedGradientOptimizer(torch.optim.Adam(mlp.parameters(), lr=1e-3))
    before = frozen.clone()
    run(mlp, opt, batches(2))
    assert frozen not in opt.state
    assert torch.equal(frozen, before)


def test_zero_dim_and_empty_tensors_are_left_alone():
    scalar = torch.nn.Parameter(torch.tensor(1.0))
    empty = torch.nn.Parameter(torch.empty(0, 3))
    scalar.grad = torch.tensor(0.5)
    empty.grad = torch.empty(0, 3)
    opt = SortedGradientOptimizer(torch.optim.SGD([scalar, empty], lr=1.0))
    opt.step()
    assert scalar.item() == 0.5
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("name", ["sort", "shuffle", "permute"])
def test_non_contiguous_gradients_keep_shape_and_strides(name):
    p = torch.nn.Parameter(torch.zeros(6, 4))
    grad = torch.randn(4, 6).t()  # transposed: non-contiguous
    p.grad = grad
    strides = grad.stride()
    opt = GradientTransformOptimizer(torch.optim.SGD([p], lr=0.0), name)
    original = grad.clone()
    opt.step()
    assert p.grad.shape == (6, 4) and p.grad.stride() == strides
    assert torch.equal(torch.sort(p.grad.flatten()).values, torch.sort(original.flatten()).values)
    if name == "sort":
        assert torch.equal(p.grad.flatten(), torch.sort(original.flatten()).values)


def test_shared_parameter_is_transformed_once_per_step():
    linear = torch.nn.Linear(8, 8, bias=False)
    twin = torch.nn.Linear(8, 8, bias=False)
    twin.weight = linear.weight  # tied
    model = torch.nn.Sequential(linear, twin)
    opt = make_optimizer(model.parameters(), "sgd", 0.0, "shuffle", seed=0)
    model(torch.randn(3, 8)).sum().backward()
    grad = linear.weight.grad.clone()
    opt.step()
    expected = grad.flatten()[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    assert torch.equal(linear.weight.grad.flatten(), expected)


def test_sparse_gradients_are_refused_naming_the_shape():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = SortedGradientOptimizer(torch.optim.SGD(emb.parameters(), lr=0.1))
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"sparse.*\(10, 3\)"):
        opt.step()


def test_complex_gradients_are_refused_naming_the_shape():
    p = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    p.grad = torch.ones(2, 2, dtype=torch.complex64)
    opt = SortedGradientOptimizer(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ValueError, match=r"complex.*\(2, 2\)"):
        opt.step()


def test_bad_names_are_refused_listing_choices(mlp):
    with pytest.raises(ValueError, match=r"base optimizer must be one of .*'adam'.*got 'adamm'"):
        make_base_optimizer("adamm", mlp.parameters(), 1e-3)
    with pytest.raises(ValueError, match=r"sgd takes no argument 'betas'; allowed: .*momentum"):
        make_base_optimizer("sgd", mlp.parameters(), 1e-3, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match=r"transform must be one of .*'sort'.*got 'sorted'"):
        make_optimizer(mlp.parameters(), "adam", 1e-3, "sorted")
    with pytest.raises(TypeError, match="base must be a torch.optim.Optimizer"):
        SortedGradientOptimizer(mlp)


def test_sort_on_float16_and_bfloat16():
    for dtype in (torch.float16, torch.bfloat16):
        g = torch.randn(50).to(dtype)
        out = g.clone()
        make_transform("sort").apply_(0, out)
        assert torch.equal(out, torch.sort(g).values)


def test_loading_a_state_of_another_transform_is_refused_before_anything_loads(mlp):
    saved = make_optimizer(mlp.parameters(), "adam", 1e-2, "sort")
    run(mlp, saved, batches(1))
    other = make_optimizer(mlp.parameters(), "adam", 1e-3, "shuffle")
    with pytest.raises(ValueError, match="saved with transform 'sort'.*uses 'shuffle'"):
        other.load_state_dict(saved.state_dict())
    assert other.param_groups[0]["lr"] == 1e-3 and not other.state


def test_state_dict_hooks_registered_on_the_wrapper_run(mlp):
    opt = SortedGradientOptimizer(torch.optim.Adam(mlp.parameters(), lr=1e-3))
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    opt.load_state_dict(opt.state_dict())
    assert calls == ["pre", "post", "load_pre", "load_post"]


@pytest.mark.parametrize("transform", ["sort", "shuffle", "permute"])
@pytest.mark.parametrize(
    "make_grad",
    [lambda: torch.randn(1, 3).expand(4, 3), lambda: torch.randn(4, 3)._neg_view()],
    ids=["expanded", "negative-bit"],
)
def test_hand_assigned_views_are_transformed_on_a_copy(transform, make_grad):
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(4, 3))
    reference = torch.nn.Parameter(torch.zeros(4, 3))
    grad = make_grad()
    weight.grad = grad
    reference.grad = grad.resolve_neg().contiguous()
    mine = GradientTransformOptimizer(torch.optim.SGD([weight], lr=1.0), transform, seed=3)
    plain = GradientTransformOptimizer(torch.optim.SGD([reference], lr=1.0), transform, seed=3)
    mine.step()
    plain.step()
    assert torch.equal(weight, reference)
    assert sorted(weight.detach().flatten().tolist()) == sorted((-grad).flatten().tolist())
