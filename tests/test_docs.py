"""Contracts of the surface: every command is documented and has help; the CLI imports light."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from zoo.cli.main import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


COMMANDS = list(_commands(main))


def test_the_cli_has_the_expected_commands():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"add", "ls", "nearest", "centroid", "finetune", "select-start", "space add", "space ls", "init", "runs"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_command_is_documented_and_has_help(path):
    cmd = dict(COMMANDS)[path]
    assert f"zoo {' '.join(path)}" in README, f"README does not show `zoo {' '.join(path)}`"
    assert (cmd.help or "").strip(), f"`zoo {' '.join(path)}` has no help text"
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0 and "Usage: " in res.output and cmd.help.split("\n")[0][:30] in res.output


def test_training_options_come_from_train_params():
    import dataclasses

    from zoo.finetune import TrainParams

    opts = {o for p in dict(COMMANDS)[("finetune",)].params for o in p.opts}
    for f in dataclasses.fields(TrainParams):
        assert f"--{f.name.replace('_', '-')}" in opts
    epochs = next(p for p in dict(COMMANDS)[("finetune",)].params if p.name == "epochs")
    assert epochs.default == TrainParams().epochs


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, zoo.cli.main; "
            "print(','.join(m for m in ('torch', 'faiss', 'numba', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_cli_and_migrations_live_under_the_zoo_namespace():
    import zoo.cli
    import zoo.migrations

    assert Path(zoo.cli.__file__).parent.name == "cli"
    assert (Path(list(zoo.migrations.__path__)[0]) / "versions").is_dir()
