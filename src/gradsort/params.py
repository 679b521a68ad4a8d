"""params.yaml: loaded once, every key checked, returned as typed records.

Every stage loads the whole file through ``load_params`` so that a typo or a bad value in
any section stops the stage before it does any work, with one line naming the key.
"""

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradsort.optim import base_optimizer_kwargs, base_optimizers
from gradsort.transforms import TRANSFORMS


class ParamsError(ValueError):
    """A params key that is unknown, missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class DataParams:
    num_samples: int
    train_split: float
    seed: int


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


@dataclass(frozen=True)
class TuneParams:
    trials: int
    epochs: int
    objective: str
    lr_low: float
    lr_high: float
    sampler_seed: int
    wave_size: int


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
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
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


def _choice(choices):
    def check(value):
        return value if isinstance(value, str) and value in choices else None

    return check, "one of " + ", ".join(sorted(choices))


# Every key of every section but ``optimizers``, with its check and what it allows.
SCHEMA = {
    "data": {
        "num_samples": _int(10),
        "train_split": _float(0.0, 1.0),
        "seed": _int(0, _SEED_MAX),
    },
    "model": {"hidden_size": _int(1), "hidden_layers": _int(0)},
    "train": {"batch_size": _int(1), "epochs": _int(1), "seeds": _int(1), "threads": _int(0)},
    "tune": {
        "trials": _int(1),
        "epochs": _int(1),
        "objective": _choice(OBJECTIVES),
        "lr_low": _float(0.0, math.inf),
        "lr_high": _float(0.0, math.inf),
        "sampler_seed": _int(0, _SEED_MAX),
        "wave_size": _int(1),
    },
}
OPTIMIZER_KEYS = {"base": True, "transform": True, "kwargs": False}  # key -> required


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML 1.2 floats such as ``1e-5`` (YAML 1.1 makes them strings)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


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


def _optimizer(name: str, raw: Any) -> OptimizerSpec:
    prefix = f"optimizers.{name}"
    if not _NAME.match(str(name)):
        raise _fail(prefix, name, "an optimizer name of letters, digits and underscores")
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
    if base not in base_optimizers():
        raise _fail(f"{prefix}.base", base, "one of " + ", ".join(sorted(base_optimizers())))
    if transform not in TRANSFORMS:
        raise _fail(f"{prefix}.transform", transform, "one of " + ", ".join(sorted(TRANSFORMS)))
    kwargs = _mapping(f"{prefix}.kwargs", values.get("kwargs", {}))
    allowed = sorted(base_optimizer_kwargs(base) - {"lr"})
    for key in kwargs:
        if key not in allowed:
            raise ParamsError(
                f"params: unknown key {prefix}.kwargs.{key}; {base} accepts {', '.join(allowed)}"
                " (lr is tuned)"
            )
    return OptimizerSpec(base=base, transform=transform, kwargs=dict(kwargs))


def parse_params(raw: Any) -> Params:
    """Check a params mapping as read from YAML and return it as typed records."""
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
    optimizers = _mapping("optimizers", raw.get("optimizers"))
    if not optimizers:
        raise _fail("optimizers", optimizers, "at least one optimizer")
    return Params(
        data=DataParams(**data),
        model=ModelParams(**sections["model"]),
        train=TrainParams(**sections["train"]),
        tune=TuneParams(**tune),
        optimizers={str(name): _optimizer(name, spec) for name, spec in optimizers.items()},
    )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and check ``path``; raises ParamsError with a one-line message."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_Loader)
    except OSError as err:
        raise ParamsError(f"params: cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ParamsError(f"params: {path} is not valid YAML{where}") from None
    return parse_params(raw)
