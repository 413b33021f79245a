"""`molgen3d` dispatch: every listed command resolves to a module with `cli(argv)`."""

from __future__ import annotations

import importlib

import pytest

from molgen3D import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_a_cli_function(name):
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(getattr(module, "cli", None)), f"{module.__name__} lacks cli(argv)"


def test_unknown_command_exits_2_and_lists_commands(capsys):
    assert cli.main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'no-such-command'" in err and "prepare-data" in err


def test_help_lists_all_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
