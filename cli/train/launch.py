"""From a command's options to a finished run: the TrainConfig built from the option groups and the command's own
settings, the run with a progress bar, and the line (or JSON record) that reports it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cli.common import console, print_json
from cli.train.options import FreezeOptions, OptimOptions, RunOptions
from cli.train.progress import TrainProgress
from indexing.errors import RetrieverError
from training.config import Objective, TrainConfig


def train(objective: Objective, data: Sequence[Path], *, base: str, run: RunOptions, optim: OptimOptions,
          default_lr: float, freeze: FreezeOptions | None = None, **settings: Any) -> None:
    """Validate the config of ``objective`` on ``data`` and run it, writing ``run.out``.

    ``settings`` are the command's own TrainConfig fields (objective-specific settings, negatives, evaluation);
    ``default_lr`` is the learning rate when ``--lr`` is not given. Raises RetrieverError for a bad setting."""
    config = TrainConfig(objective=objective, data=tuple(str(p) for p in data), base=base, **optim.settings(default_lr),
                         **(freeze.settings() if freeze is not None else {}), **run.settings(), **settings)
    run_and_report(config.validate(), run)


def run_and_report(config: TrainConfig, run: RunOptions) -> None:
    """Run ``config`` into ``run.out`` (progress bar on rank 0) and print the outcome (rank 0).

    Raises RetrieverError for --stop-after < 1 or --max-minutes <= 0, and whatever the run raises."""
    from transformers.utils import logging as hf_logging

    from training.run import run_training

    hf_logging.disable_progress_bar()  # the CLI draws its own bar
    if run.stop_after is not None and run.stop_after < 1:
        raise RetrieverError(f"--stop-after must be >= 1 (got {run.stop_after})")
    if run.max_minutes is not None and not run.max_minutes > 0:
        raise RetrieverError(f"--max-minutes must be > 0 (got {run.max_minutes})")
    time_limit_s = run.max_minutes * 60 if run.max_minutes is not None else None
    main = int(os.environ.get("RANK", "0")) == 0
    with TrainProgress(config.steps, enabled=main and not run.as_json) as progress:
        result = run_training(config, run.out, device=run.device, resume=run.resume, overwrite=run.overwrite,
                              stop_after=run.stop_after, time_limit_s=time_limit_s, callback=progress)
    if not main:
        return
    if run.as_json:
        record = asdict(result)
        record["out"] = str(result.out)
        print_json(record)
        return
    loss = f"{result.last_loss:.4f}" if result.last_loss is not None else "-"
    if not result.finished and not result.timed_out:
        console.print(f"stopped at step {result.steps_done}/{config.steps} (loss {loss}); continue with --resume", highlight=False)
        return
    line = f"trained [bold]{run.out}[/]: {result.steps_done} steps, last loss {loss}"
    if result.timed_out:
        line += f" (time limit: {result.steps_done} of {config.steps} steps; continue with --resume)"
    if result.best_step is not None and result.best_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
        line += f"; output = step {result.best_step} ({shown} on {config.eval.split})"
    console.print(line, highlight=False)
