"""Options shared by the ``retriever train`` commands, declared once (cli.train.shared/options): every command
gets all of its groups' options, overrides change one command only, and values reach the TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

import training.run
from cli.main import app
from cli.train.options import EvalOptions, FreezeOptions, KeyOptions, NegativeOptions, OptimOptions, RunOptions, ScratchOptions
from cli.train.shared import OptionGroup, shared_options
from training.events import TrainResult

GROUPS = {
    "contriever": [RunOptions, OptimOptions, KeyOptions, NegativeOptions, ScratchOptions, FreezeOptions, EvalOptions],
    "finetune": [RunOptions, OptimOptions, KeyOptions, NegativeOptions, FreezeOptions, EvalOptions],
    "url": [RunOptions, OptimOptions, ScratchOptions],
    "crosslingual": [RunOptions, OptimOptions, FreezeOptions, EvalOptions],
    "code": [RunOptions, OptimOptions, FreezeOptions, EvalOptions],
    "sql": [RunOptions, OptimOptions, FreezeOptions],
}


@pytest.mark.parametrize("command", sorted(GROUPS))
def test_every_command_has_all_options_of_its_groups(command):
    click_command = typer.main.get_command(app).commands["train"].commands[command]  # type: ignore[attr-defined]
    names = {p.name for p in click_command.params}
    wanted = {f.name for group in GROUPS[command] for f in fields(group)}
    assert wanted <= names
    help_text = CliRunner().invoke(app, ["train", command, "--help"], terminal_width=300).output
    assert "--out" in help_text and "--max-minutes" in help_text and "--steps" in help_text


def _configs(monkeypatch, *args: str) -> list[dict]:
    seen: list[dict] = []

    def fake(config, out, **kwargs):
        seen.append({"config": config.to_dict(), "out": str(out), **{k: v for k, v in kwargs.items() if k != "callback"}})
        return TrainResult(Path(out), config.steps, True, 0.5)

    monkeypatch.setattr(training.run, "run_training", fake)
    result = CliRunner().invoke(app, ["train", *args, "--out", "OUT", "--json"])
    assert result.exit_code == 0, result.output
    return seen


def test_overrides_apply_to_their_command_only(monkeypatch):
    sql = _configs(monkeypatch, "sql", "pool")[0]["config"]
    finetune = _configs(monkeypatch, "finetune", "pairs.jsonl")[0]["config"]
    assert (sql["steps"], sql["batch_size"], sql["max_tokens"], sql["warmup"]) == (150, 16, 256, 15)
    assert (finetune["steps"], finetune["batch_size"], finetune["max_tokens"], finetune["warmup"]) == (1000, 32, 128, 100)
    crosslingual = _configs(monkeypatch, "crosslingual", "corpus.jsonl")[0]["config"]
    assert crosslingual["freeze_embeddings"] and not finetune["freeze_embeddings"]
    assert _configs(monkeypatch, "contriever", "c.jsonl")[0]["config"]["queue_size"] == 4096 and finetune["queue_size"] == 0


def test_group_values_reach_the_config_and_the_run(monkeypatch):
    [seen] = _configs(monkeypatch, "contriever", "c.jsonl", "--base", "scratch", "--layers", "2", "--lr", "3e-4",
                      "--freeze-embeddings", "--eval", "EV", "--eval-every", "5", "--negatives-per-query", "0",
                      "--seed", "7", "--stop-after", "3", "--device", "cpu", "--resume")
    config = seen["config"]
    assert config["scratch"]["layers"] == 2 and config["scratch"]["hidden"] == 384 and config["lr"] == 3e-4
    assert config["freeze_embeddings"] and config["eval"]["dataset"] == "EV" and config["eval"]["every"] == 5
    assert config["seed"] == 7 and seen["out"] == "OUT"
    assert (seen["device"], seen["resume"], seen["stop_after"], seen["overwrite"]) == ("cpu", True, 3, False)
    assert _configs(monkeypatch, "url", "u.txt")[0]["config"]["scratch"] == {"layers": 4, "hidden": 128, "heads": 4,
                                                                          "vocab_size": 8192}


@dataclass(frozen=True)
class _Size(OptionGroup):
    width: Annotated[int, typer.Option("--width", help="Width.")] = 3


def test_shared_options_hands_over_one_instance_per_group():
    received = []

    @shared_options(width=typer.Option(5, "--width", help="Wider."))
    def command(name: str = typer.Argument(...), *, size: _Size) -> None:
        received.append((name, size))

    tiny = typer.Typer()
    tiny.command()(command)
    tiny.command("other")(lambda: None)  # two commands, so the first is a subcommand
    assert CliRunner().invoke(tiny, ["command", "x"]).exit_code == 0
    assert CliRunner().invoke(tiny, ["command", "y", "--width", "9"]).exit_code == 0
    assert received == [("x", _Size(5)), ("y", _Size(9))]
    with pytest.raises(TypeError, match="overrides of no option"):
        shared_options(height=typer.Option(1, "--height"))(command.__wrapped__)
