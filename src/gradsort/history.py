"""Per-epoch records of a training run, and the error of a run that diverged."""

from dataclasses import dataclass, field


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""

    def __init__(self, epoch: int, what: str, history: "History") -> None:
        super().__init__(f"non-finite {what} at epoch {epoch}")
        self.epoch = epoch
        self.history = history


@dataclass
class History:
    """Per-epoch train loss, validation loss and validation accuracy (epoch 1 first).

    ``initial_val_loss`` is the validation loss of the initial weights; ``test_loss`` and
    ``test_acc`` are scored once after training when a run has a test split.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    initial_val_loss: float | None = None
    test_loss: float | None = None
    test_acc: float | None = None

    def rows(self) -> list[dict]:
        return [
            {"epoch": i + 1, "train_loss": t, "val_loss": v, "val_acc": a}
            for i, (t, v, a) in enumerate(zip(self.train_loss, self.val_loss, self.val_acc))
        ]
