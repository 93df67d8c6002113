"""The progress of a training run on the terminal, drawn from the trainer's events."""

from __future__ import annotations

from typing import Any

from cli.common import console


class TrainProgress:
    """A rich progress bar (loss, lr, examples/s, tokens/s) fed by the trainer's events; evaluations print a line."""

    def __init__(self, total: int, *, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not enabled,
        )
        self.enabled = enabled
        self.task = self.progress.add_task("train", total=total, stats="")
        # No terminal (a redirected log, a batch job): the bar is not drawn, so a plain line every 5% of the run
        self.every = max(1, total // 20) if enabled and not console.is_terminal else 0
        self.total = total

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, event) -> None:
        if event.kind == "start":  # drawn only once loading is over, so errors before it stay one line
            self.progress.start()
        if event.kind in ("start", "step"):
            stats = ""
            if event.kind == "step":
                stats = (f"loss {event.loss:.4f}  lr {event.lr:.2e}  {event.examples_per_s:,.1f} ex/s  "
                         f"{event.tokens_per_s:,.0f} tok/s")
            self.progress.update(self.task, completed=event.step, stats=stats)
            if self.every and event.kind == "step" and (event.step % self.every == 0 or event.step == self.total):
                console.print(f"step {event.step}/{self.total}: {stats}", highlight=False, markup=False)
        elif event.kind == "eval" and self.enabled:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in (event.metrics or {}).items())
            self.progress.console.print(f"step {event.step}: {shown}" + ("  [green](best)[/]" if event.improved else ""), highlight=False)
