"""The README's CLI tour works as written: every command of its ``## The CLI`` block runs, in
order, from a fresh directory, at smoke size (the same commands with fewer training steps and
prompts appended), and exits 0."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iclab.cli import app
from iclab.config import PRESETS_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = {"tensorboard"}  # a server: it would never exit
SMOKE = {  # what each command gets appended so that it runs in seconds
    "train": ["--set", "train.steps=2", "--no-progress"],
    "eval": ["--n-prompts", "8", "--no-progress"],
    "probe": ["--no-progress"],  # and each probe on fewer prompts: at_smoke_size
    "longctx": ["--n-prompts", "8", "--no-progress"],
    "quickstart": ["--set", "train.steps=2", "--set", "eval.n_prompts=8", "--no-progress"],
    "reproduce": ["--scale", "smoke", "--no-progress"],
    "sweep": ["--set", "train.steps=2", "--set", "eval.n_prompts=8"],
}


def cli_tour() -> list[list[str]]:
    """The commands of the first bash block under ``## The CLI``, comments removed."""
    text = README.read_text().split("## The CLI\n", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [command for command in commands if command]


def at_smoke_size(command: list[str]) -> list[str]:
    if command[0] == "torchrun":
        return [*command, *SMOKE["train"]]
    if command[1] == "probe":  # each probe on fewer prompts (the tour's specs name no options)
        at = command.index("--probe") + 1
        specs = ",".join(f"{name}(n_prompts=128)" for name in command[at].split(","))
        command = [*command[:at], specs, *command[at + 1 :]]
    return [*command, *SMOKE.get(command[1], [])]


def test_the_tour_names_the_commands_it_teaches():
    programs = {command[0] for command in cli_tour()}
    assert programs == {"iclab", "torchrun", *NOT_RUN}
    taught = {command[1] for command in cli_tour() if command[0] == "iclab"}
    assert {"train", "eval", "report", "compare", "runs", "probe", "reproduce", "sweep"} <= taught


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_command_of_the_readme_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(PRESETS_DIR)  # the tour runs from the repository root
    runner = CliRunner()
    for command in cli_tour():
        if command[0] in NOT_RUN:
            continue
        argv = at_smoke_size(command)
        if command[0] == "torchrun":
            torchrun = Path(sys.executable).with_name("torchrun")
            environment = {**os.environ, "OMP_NUM_THREADS": "1"}
            done = subprocess.run(
                [str(torchrun), *argv[1:]], capture_output=True, text=True, env=environment
            )
            assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout}{done.stderr}"
            continue
        result = runner.invoke(app, argv[1:])
        assert result.exit_code == 0, f"{shlex.join(command)}\n{result.output}"
        assert result.output.strip(), f"{shlex.join(command)} printed nothing"
