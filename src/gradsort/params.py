"""params.yaml: loaded once, every key checked, returned as typed records.

Every stage loads the whole file through ``load_params`` so that a typo or a bad value in
any section stops the stage before it does any work, with one line naming the key.
"""

import difflib
import inspect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gradsort.data import PROTOCOLS
from gradsort.errors import StageError
from gradsort.optim import base_optimizer_kwargs, base_optimizers, make_optimizer
from gradsort.transforms import TRANSFORMS


class ParamsError(StageError, ValueError):
    """A params key that is unknown, missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class DataParams:
    num_samples: int
    train_split: float
    seed: int
    protocol: str
    holdout_fraction: float


@dataclass(frozen=True)
class ModelParams:
    hidden_size: int
    hidden_layers: int


@dataclass(frozen=True)
class TrainParams:
    batch_size: int
    epochs: int
    seeds: int
    threads: int
    device: str


@dataclass(frozen=True)
class TuneParams:
    trials: int
    epochs: int
    objective: str
    lr_low: float
    lr_high: float
    sampler_seed: int
    wave_size: int
    storage: str
    workers: int


@dataclass(frozen=True)
class OptimizerSpec:
    base: str
    transform: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    train: TrainParams
    tune: TuneParams
    optimizers: dict[str, OptimizerSpec]


OBJECTIVES = ("min", "final")
DEVICES = ("auto", "cpu", "cuda")
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_SEED_MAX = 2**32 - 1


def _int(low: int, high: int | None = None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if low <= value and (high is None or value <= high) else None

    text = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return check, text


def _float(low: float, high: float, *, open_low: bool = True, open_high: bool = True):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        value = float(value)
        if not math.isfinite(value):
            return None
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return value if above and below else None

    left, right = "(" if open_low else "[", ")" if open_high else "]"
    return check, f"a number in {left}{low}, {high}{right}"


_STORAGE = re.compile(r"(env:[A-Za-z_][A-Za-z0-9_]*|[a-z][a-z0-9+]*://\S+)")


def _storage():
    def check(value):
        ok = isinstance(value, str) and (value == "" or _STORAGE.fullmatch(value))
        return value if ok else None

    return check, (
        "empty (a local SQLite file per tune stage), an Optuna storage URL such as "
        "postgresql://user:password@host/db, or env:VARIABLE naming an environment variable "
        "that holds one"
    )


def storage_url(value: str, studies: str | Path | None = "data/studies") -> str:
    """The storage URL that ``tune.storage`` names ('' for the local default), checked: an
    ``env:`` variable must hold a URL, and a SQLite file must be a file, and one of its own
    outside ``studies`` (the tune stages' own study files) unless ``studies`` is None."""
    url = value
    if value.startswith("env:"):
        name = value[4:]
        url = os.environ.get(name, "")
        if not _STORAGE.fullmatch(url) or url.startswith("env:"):
            raise ParamsError(
                f"params: tune.storage={value!r} is not allowed here: the environment variable "
                f"{name} is {'unset' if not url else 'not a storage URL'}"
            )
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        inside = studies is not None and Path(studies).resolve() in Path(path).resolve().parents
        if path in ("", ":memory:") or inside:
            raise ParamsError(
                f"params: tune.storage={value!r} is not allowed; expected a SQLite file of its "
                f"own (sqlite:///path/to/file.db), not in memory and not in {studies}/"
            )
    return url


def _choice(choices):
    def check(value):
        return value if isinstance(value, str) and value in choices else None

    return check, "one of " + ", ".join(sorted(choices))


# Every key of every section but ``optimizers``, with its check and what it allows.
SCHEMA = {
    "data": {
        "num_samples": _int(10, 1_000_000),
        "train_split": _float(0.0, 1.0),
        "seed": _int(0, _SEED_MAX),
        "protocol": _choice(PROTOCOLS),
        "holdout_fraction": _float(0.0, 1.0),
    },
    "model": {"hidden_size": _int(1, 65536), "hidden_layers": _int(0, 64)},
    "train": {
        "batch_size": _int(1),
        "epochs": _int(1),
        "seeds": _int(1),
        "threads": _int(0, 1024),
        "device": _choice(DEVICES),
    },
    "tune": {
        "trials": _int(1),
        "epochs": _int(1),
        "objective": _choice(OBJECTIVES),
        "lr_low": _float(0.0, math.inf),
        "lr_high": _float(0.0, math.inf),
        "sampler_seed": _int(0, _SEED_MAX),
        "wave_size": _int(1),
        "storage": _storage(),
        "workers": _int(1, 256),
    },
}
OPTIMIZER_KEYS = {"base": True, "transform": True, "kwargs": False}  # key -> required


def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params: {key}={value!r} is not allowed; expected {allowed}")


def _known_keys() -> list[str]:
    keys = [f"{section}.{key}" for section, spec in SCHEMA.items() for key in spec]
    return keys + ["optimizers"]


def _unknown(key: str) -> ParamsError:
    candidates = _known_keys() if "." in key else [*SCHEMA, "optimizers"]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(_known_keys())}"
    return ParamsError(f"params: unknown key {key}{hint}")


def _mapping(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise _fail(key, value, "a mapping")
    return value


def _section(name: str, raw: dict) -> dict:
    values = _mapping(name, raw.get(name))
    spec = SCHEMA[name]
    for key in values:
        if key not in spec:
            raise _unknown(f"{name}.{key}")
    checked = {}
    for key, (check, allowed) in spec.items():
        if key not in values:
            raise ParamsError(f"params: missing key {name}.{key}; expected {allowed}")
        result = check(values[key])
        if result is None:
            raise _fail(f"{name}.{key}", values[key], allowed)
        checked[key] = result
    return checked


def _optimizer(name: str, raw: Any, trial_step: bool) -> OptimizerSpec:
    prefix = f"optimizers.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ParamsError(
            f"params: optimizer name {name!r} is not allowed; expected 1 to 64 letters, digits "
            "and underscores"
        )
    values = _mapping(prefix, raw)
    for key in values:
        if key not in OPTIMIZER_KEYS:
            close = difflib.get_close_matches(key, list(OPTIMIZER_KEYS), n=1)
            hint = f"; did you mean {prefix}.{close[0]}?" if close else ""
            raise ParamsError(
                f"params: unknown key {prefix}.{key}{hint} (allowed: base, transform, kwargs)"
            )
    for key, required in OPTIMIZER_KEYS.items():
        if required and key not in values:
            raise ParamsError(f"params: missing key {prefix}.{key}")
    base, transform = values["base"], values["transform"]
    bases = pipeline_bases()
    if not isinstance(base, str) or base not in bases:
        raise _fail(f"{prefix}.base", base, "one of " + ", ".join(bases))
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        raise _fail(f"{prefix}.transform", transform, "one of " + ", ".join(sorted(TRANSFORMS)))
    kwargs = _mapping(f"{prefix}.kwargs", values.get("kwargs", {}))
    allowed = sorted(base_optimizer_kwargs(base) - {"lr"} - _REFUSED_KWARGS)
    for key in kwargs:
        if key not in allowed:
            raise ParamsError(
                f"params: unknown key {prefix}.kwargs.{key}; {base} accepts {', '.join(allowed)}"
                " (lr is tuned)"
            )
    kwargs = {
        key: _kwarg(f"{prefix}.kwargs.{key}", base, key, value) for key, value in kwargs.items()
    }
    if trial_step and kwargs:  # with torch's defaults every offered base builds and steps
        _trial_step(prefix, base, transform, kwargs)
    return OptimizerSpec(base=base, transform=transform, kwargs=kwargs)


# Bases that cannot train the MLP here: LBFGS needs a closure, SparseAdam sparse gradients,
# Muon 2-D parameters only.
_UNTRAINABLE_BASES = {"lbfgs", "sparseadam", "muon"}
# Keywords about how torch runs the update, not what it computes; some fail on the CPU.
_REFUSED_KWARGS = {"capturable", "differentiable", "foreach", "fused"}


def pipeline_bases() -> list[str]:
    """The lower-case names of the torch.optim classes the pipeline can train with."""
    return sorted(set(base_optimizers()) - _UNTRAINABLE_BASES)


def _kwarg(key: str, base: str, name: str, value: Any) -> Any:
    """``value`` checked against the type of the keyword's default in torch."""
    default = inspect.signature(base_optimizers()[base]).parameters[name].default
    if isinstance(default, bool):
        ok, allowed = isinstance(value, bool), "true or false"
    elif isinstance(default, int | float) and not isinstance(value, bool):
        ok, allowed = isinstance(value, int | float) and math.isfinite(value), "a number"
    elif isinstance(default, tuple):
        ok = (
            isinstance(value, list | tuple)
            and len(value) == len(default)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        )
        allowed, value = f"a list of {len(default)} numbers", tuple(value) if ok else value
    else:
        ok, allowed = (
            isinstance(value, int | float | str) and not isinstance(value, bool),
            ("a number or a string"),
        )
    if not ok:
        raise _fail(key, value, allowed)
    return value


def _trial_step(prefix: str, base: str, transform: str, kwargs: dict) -> None:
    """Build the optimizer on a small parameter and take one step: torch's own checks of the
    keyword values (ranges, combinations) then fail here, before any stage does work."""
    weight = torch.nn.Parameter(torch.ones(2, 2))
    weight.grad = torch.ones(2, 2)
    try:
        make_optimizer([weight], base, 1e-3, transform, **kwargs).step()
    except (ValueError, TypeError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParamsError(f"params: {prefix}.kwargs are not accepted by {base}: {detail}") from None


def parse_params(raw: Any, trial_step: bool = True) -> Params:
    """Check a params mapping as read from YAML and return it as typed records.

    ``trial_step`` also builds each optimizer that has ``kwargs`` and steps it once (torch's
    own checks of the keyword values); the first one built costs ~2 s of torch start-up.
    """
    raw = _mapping("params", raw)
    for key in raw:
        if key not in SCHEMA and key != "optimizers":
            raise _unknown(str(key))
    sections = {name: _section(name, raw) for name in SCHEMA}
    data, tune = sections["data"], sections["tune"]
    if tune["lr_low"] >= tune["lr_high"]:
        raise _fail("tune.lr_low", tune["lr_low"], f"a number below tune.lr_high={tune['lr_high']}")
    n_train = int(data["num_samples"] // 10 * 10 * data["train_split"])
    if not 0 < n_train < data["num_samples"] // 10 * 10:
        raise _fail(
            "data.train_split",
            data["train_split"],
            f"a fraction leaving samples on both sides of the split of {data['num_samples']}",
        )
    if data["protocol"] == "holdout":
        holdout = round(n_train * data["holdout_fraction"])
        if not 10 <= holdout <= n_train - 10:
            raise _fail(
                "data.holdout_fraction",
                data["holdout_fraction"],
                f"a fraction leaving at least 10 of the {n_train} train samples on both sides",
            )
    optimizers = _mapping("optimizers", raw.get("optimizers"))
    if not optimizers:
        raise _fail("optimizers", optimizers, "at least one optimizer")
    return Params(
        data=DataParams(**data),
        model=ModelParams(**sections["model"]),
        train=TrainParams(**sections["train"]),
        tune=TuneParams(**tune),
        optimizers={
            str(name): _optimizer(name, spec, trial_step) for name, spec in optimizers.items()
        },
    )


def load_params(path: str | Path = "params.yaml", trial_step: bool = True) -> Params:
    """Read and check ``path``; raises ParamsError with a one-line message."""
    path = Path(path)
    try:
        # YAML 1.2, as DVC reads the file: 1e-5 is a number, yes/no and 010 are what they say.
        raw = YAML(typ="safe", pure=True).load(path.read_bytes())
    except OSError as err:
        raise ParamsError(f"params: cannot read {path}: {err.strerror}") from None
    except (YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ParamsError(f"params: {path} is not valid YAML{where}: {problem}") from None
    return parse_params(raw, trial_step)
