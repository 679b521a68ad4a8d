"""The Optuna study of one optimizer's learning rate."""

import logging
import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from gradsort.errors import StageError
from gradsort.history import DivergedError, History

log = logging.getLogger(__name__)

OBJECTIVES: dict[str, Callable[[History], float]] = {
    "min": lambda history: min(history.val_loss),
    "final": lambda history: history.val_loss[-1],
}


# TPE's default: this many trials are drawn at random before TPE models the results.
STARTUP_TRIALS = 10


class NoTrialCompletedError(StageError, RuntimeError):
    """Every trial of a study failed."""


def waves(trials: int, startup: int, wave_size: int) -> list[int]:
    """Sizes of the waves of trials: the independent start-up trials together, then
    ``wave_size`` at a time."""
    first = min(trials, max(startup, 1))
    rest = trials - first
    return [first] + [min(wave_size, rest - i) for i in range(0, rest, wave_size)]


def run_study(
    train_wave: Callable[[list[float]], list[History | DivergedError]],
    trials: int,
    lr_low: float,
    lr_high: float,
    sampler_seed: int,
    objective: str = "min",
    wave_size: int = 1,
    storage: str | None = None,
    study_name: str = "lr",
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Tune the learning rate: ``trials`` trials, lr log-uniform in [lr_low, lr_high].

    A fresh TPE sampler seeded with ``sampler_seed`` proposes the lrs, and ``train_wave``
    trains the lrs of a wave together. The start-up trials, which TPE draws at random, form
    the first wave and get the same lrs as they would one by one; later waves of
    ``wave_size`` trials are proposed with the constant liar, so TPE learns from every
    trial that finished before the wave (``wave_size: 1`` is plain sequential TPE). A trial
    scores the minimum or the final validation loss of its history; a diverged trial is
    recorded as failed with its reason and the study goes on.
    """
    score = OBJECTIVES[objective]
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=STARTUP_TRIALS, constant_liar=True, seed=sampler_seed
    )
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="minimize", sampler=sampler
    )
    distributions = {"lr": optuna.distributions.FloatDistribution(lr_low, lr_high, log=True)}
    for size in waves(trials, STARTUP_TRIALS, wave_size):
        asked = [study.ask(distributions) for _ in range(size)]
        results = train_wave([trial.params["lr"] for trial in asked])
        for trial, result in zip(asked, results):
            if isinstance(result, DivergedError):
                trial.set_user_attr("fail_reason", str(result))
                frozen = study.tell(trial, state=TrialState.FAIL)
            else:
                frozen = study.tell(trial, score(result))
            if on_trial is not None:
                on_trial(frozen)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise NoTrialCompletedError(
            f"no trial of {trials} completed for lr in [{lr_low:g}, {lr_high:g}]"
        )
    return study


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: number, lr, value (None when failed), state and failure reason."""
    return [
        {
            "trial": t.number,
            "lr": t.params.get("lr"),  # None for a trial whose worker died before sampling
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "state": t.state.name.lower(),
            "fail_reason": _fail_reason(t),
        }
        for t in study.get_trials(deepcopy=False)
    ]


# A best lr within this factor of either end of the search range may be an optimum outside it.
EDGE_FACTOR = 2.0


def at_edge(lr: float, lr_low: float, lr_high: float) -> str | None:
    """``"low"`` or ``"high"`` when ``lr`` lies within EDGE_FACTOR of that end of the range."""
    if lr <= lr_low * EDGE_FACTOR:
        return "low"
    if lr >= lr_high / EDGE_FACTOR:
        return "high"
    return None


def edge_warning(lr: float, lr_low: float, lr_high: float) -> str:
    """The warning for a best lr at an edge of the search range."""
    edge = at_edge(lr, lr_low, lr_high)
    bound = lr_low if edge == "low" else lr_high
    return (
        f"best lr {lr:.3g} lies within a factor {EDGE_FACTOR:g} of the {edge} end of the search "
        f"range ({bound:g}): the optimum may lie outside the range searched"
    )


def _fail_reason(trial: optuna.trial.FrozenTrial) -> str:
    if trial.state != TrialState.FAIL:
        return ""
    # Only a trial failed for its worker's silence has no reason of its own.
    return trial.user_attrs.get("fail_reason", "no heartbeat from its worker")


def study_summary(study: optuna.Study, lr_low: float, lr_high: float) -> dict:
    """The best lr and value, the counts of completed and failed trials, and whether the best
    lr lies at an edge of [lr_low, lr_high] (``lr_at_edge``; ``lr_edge`` says which)."""
    trials = study.get_trials(deepcopy=False)
    best_lr = study.best_params["lr"]
    edge = at_edge(best_lr, lr_low, lr_high)
    return {
        "best_lr": best_lr,
        "best_value": study.best_value,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "lr_at_edge": edge is not None,
        "lr_edge": edge or "none",
    }


def sqlite_url(path: str | Path) -> str:
    """An Optuna storage URL for the SQLite file ``path``."""
    return f"sqlite:///{Path(path).as_posix()}"


def describe(trial: optuna.trial.FrozenTrial) -> str:
    """One progress line for a finished trial."""
    lr = trial.params.get("lr")
    shown = "none" if lr is None else f"{lr:.3g}"
    if trial.state == TrialState.COMPLETE and math.isfinite(trial.value):
        return f"trial {trial.number}: lr={shown} value={trial.value:.4f}"
    return f"trial {trial.number}: lr={shown} failed ({_fail_reason(trial)})"
