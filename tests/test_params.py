import copy
from pathlib import Path

import pytest
import torch
import yaml

from gradsort.params import ParamsError, load_params, parse_params, storage_url
from gradsort.stage import select_device

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(key, value):
    raw = copy.deepcopy(DEFAULTS)
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


DELETE = object()


def test_defaults_are_the_published_setup():
    params = load_params(ROOT / "params.yaml")
    assert params.data.num_samples == 10000 and params.data.train_split == 0.8
    assert params.data.seed == 42
    assert (params.model.hidden_size, params.model.hidden_layers) == (256, 2)
    assert (params.train.batch_size, params.train.epochs, params.train.seeds) == (128, 25, 5)
    assert params.train.threads == 1 and params.tune.wave_size == 5
    assert params.data.protocol == "seed" and params.data.holdout_fraction == 0.2
    assert params.train.device == "auto"
    assert params.tune.trials == 15 and params.tune.epochs == 5 and params.tune.objective == "min"
    assert (params.tune.lr_low, params.tune.lr_high) == (1e-5, 1e-1)
    assert {n: (s.base, s.transform) for n, s in params.optimizers.items()} == {
        "adam": ("adam", "none"),
        "sorted_adam": ("adam", "sort"),
    }


def test_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("lr_low: 1.0e-5", "lr_low: 1e-5"))
    assert "lr_low: 1e-5" in path.read_text()
    assert load_params(path).tune.lr_low == 1e-5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.epoch", 3, r"unknown key train\.epoch; did you mean train\.epochs\?"),
        ("tune.trail", 3, r"unknown key tune\.trail; did you mean tune\.trials\?"),
        ("train.epochs", 0, r"train\.epochs=0 is not allowed; expected an integer >= 1"),
        ("tune.trials", -1, r"tune\.trials=-1 .* an integer >= 1"),
        ("train.seeds", 0, r"train\.seeds=0 .* an integer >= 1"),
        ("tune.epochs", 2.5, r"tune\.epochs=2\.5 .* an integer >= 1"),
        ("train.batch_size", "128", r"train\.batch_size='128' .* an integer"),
        ("train.epochs", True, r"train\.epochs=True"),
        ("tune.lr_low", 0.0, r"tune\.lr_low=0\.0 .* a number in \(0\.0, inf\)"),
        ("tune.lr_low", "1e-5", r"tune\.lr_low='1e-5' .* a number"),
        ("tune.lr_low", 0.5, r"tune\.lr_low=0\.5 .* below tune\.lr_high=0\.1"),
        ("tune.objective", "mean", r"tune\.objective='mean' .* one of final, min"),
        ("data.train_split", 1.0, r"data\.train_split=1\.0 .* a number in \(0\.0, 1\.0\)"),
        ("data.num_samples", DELETE, r"missing key data\.num_samples"),
        ("optimizers.adam.base", "adamm", r"optimizers\.adam\.base='adamm' .* one of .*adamw"),
        ("optimizers.adam.transform", "sorted", r"transform='sorted' .* none, permute"),
        ("optimizers.adam.lr", 0.1, r"unknown key optimizers\.adam\.lr"),
        ("optimizers.adam.kwargs", {"momentum": 0.9}, r"kwargs\.momentum; adam accepts"),
        (
            "optimizers.bad-name",
            {"base": "adam", "transform": "none"},
            r"optimizer name 'bad-name'",
        ),
        ("optimizers", {}, r"optimizers=\{\} .* at least one optimizer"),
        ("trian", {}, r"unknown key trian; did you mean train\?"),
        ("optimizers.adam.kwargs", {"betas": [0.9]}, r"kwargs\.betas=\[0\.9\] .* a list of 2"),
        ("optimizers.adam.kwargs", {"amsgrad": "maybe"}, r"kwargs\.amsgrad='maybe' .* true or"),
        ("optimizers.adam.kwargs", {"eps": -1.0}, r"not accepted by adam: Invalid epsilon"),
        ("optimizers.adam.kwargs", {"betas": [0.9, 1.5]}, r"not accepted by adam: Invalid beta"),
        ("optimizers.adam.kwargs", {"capturable": True}, r"unknown key .*kwargs\.capturable"),
        (
            "optimizers.s",
            {"base": "sgd", "transform": "none", "kwargs": {"nesterov": True}},
            r"not accepted by sgd: Nesterov momentum requires",
        ),
        (
            "optimizers.s",
            {"base": "sgd", "transform": "none", "kwargs": {"momentum": "high"}},
            r"kwargs\.momentum='high' .* a number",
        ),
        ("optimizers.l", {"base": "lbfgs", "transform": "none"}, r"base='lbfgs' .* one of"),
        ("optimizers.l", {"base": ["adam"], "transform": "none"}, r"base=\['adam'\]"),
        ("optimizers.l", {"base": "adam", "transform": ["sort"]}, r"transform=\['sort'\]"),
        (
            "optimizers.o\n",
            {"base": "adam", "transform": "none"},
            r"optimizer name 'o\\n' is not allowed",
        ),
        ("train.threads", 10**8, r"train\.threads=100000000 .* \[0, 1024\]"),
        ("data.protocol", "test", r"data\.protocol='test' .* one of holdout, seed"),
        ("data.holdout_fraction", 1.0, r"data\.holdout_fraction=1\.0 .* \(0\.0, 1\.0\)"),
        ("train.device", "gpu", r"train\.device='gpu' .* one of auto, cpu, cuda"),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(key, value, message):
    with pytest.raises(ParamsError, match=message) as err:
        parse_params(with_change(key, value))
    assert "\n" not in str(err.value)


def test_kwargs_pass_through_for_the_base():
    raw = with_change(
        "optimizers.sgd_m", {"base": "sgd", "transform": "sort", "kwargs": {"momentum": 0.9}}
    )
    assert parse_params(raw).optimizers["sgd_m"].kwargs == {"momentum": 0.9}


def test_yaml_is_read_as_dvc_reads_it(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("seed: 42", "seed: 010").replace("  adam:\n", "  yes:\n", 1))
    params = load_params(path)
    assert params.data.seed == 10  # YAML 1.2: no octal
    assert "yes" in params.optimizers  # a name, not a boolean
    path.write_text(text + "train:\n  epochs: 3\n")
    with pytest.raises(ParamsError, match="not valid YAML.*duplicate key"):
        load_params(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_a_holdout_must_leave_samples_on_both_sides():
    raw = with_change("data.protocol", "holdout")
    raw["data"]["num_samples"] = 100
    raw["data"]["holdout_fraction"] = 0.05  # 4 of 80 train samples
    with pytest.raises(ParamsError, match=r"data\.holdout_fraction=0\.05 .* at least 10 of the 80"):
        parse_params(raw)
    raw["data"]["protocol"] = "seed"  # the fraction is not used then
    assert parse_params(raw).data.holdout_fraction == 0.05


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match=r"train\.device='cuda' .* no CUDA device"):
            select_device("cuda")


@pytest.mark.parametrize(
    "value", ["sqlite:///", "sqlite:///:memory:", "sqlite:///data/studies/adam.db.partial"]
)
def test_storage_must_be_a_sqlite_file_of_its_own(value, tmp_path):
    with pytest.raises(ParamsError, match=r"tune\.storage=.* a SQLite file of its own"):
        storage_url(value, tmp_path / "data/studies" if "studies" not in value else "data/studies")
    assert storage_url("sqlite:////tmp/x/shared.db") == "sqlite:////tmp/x/shared.db"


def test_storage_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRADSORT_X", "postgresql://u@h/db")
    assert storage_url("env:GRADSORT_X") == "postgresql://u@h/db"
    monkeypatch.delenv("GRADSORT_X")
    with pytest.raises(ParamsError, match="GRADSORT_X is unset"):
        storage_url("env:GRADSORT_X")


def test_long_optimizer_names_are_refused():
    raw = with_change("optimizers." + "a" * 65, {"base": "adam", "transform": "none"})
    with pytest.raises(ParamsError, match="1 to 64 letters"):
        parse_params(raw)
