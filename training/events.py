"""What the training loop reports while it runs (:class:`TrainEvent`, to a callback) and when it ends
(:class:`TrainResult`, and the ``training.json`` history file in the output folder)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

HISTORY_FILE = "training.json"


@dataclass(frozen=True)
class TrainEvent:
    """What the loop reports to its callback (the CLI draws a progress bar from these)."""

    kind: Literal["start", "step", "eval", "checkpoint", "done"]
    step: int
    total: int
    loss: float | None = None
    lr: float | None = None
    examples_per_s: float | None = None
    tokens_per_s: float | None = None
    metrics: dict[str, float] | None = None
    improved: bool = False
    path: str | None = None


@dataclass
class TrainResult:
    """How a run ended. ``best_*`` are set when an evaluation set was given."""

    out: Path
    steps_done: int
    finished: bool
    last_loss: float | None
    best_step: int | None = None
    best_metrics: dict[str, float] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False  # ended by ``time_limit_s`` before ``config.steps``; the model was exported all the same


Callback = Callable[[TrainEvent], None]
