"""The command tree: every command and group answers ``--help``, bad usage exits 2, and a command
loads only what it needs (commands are imported when used)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from rewind.cli import cli
from tests.cli_runner import run_rewind


def _paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    context = click.Context(group)
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None, f"`rewind {' '.join((*prefix, name))}` is listed but does not load"
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_paths(command, (*prefix, name)))
    return found


COMMANDS = _paths(cli)


def test_the_tree_holds_every_noun() -> None:
    nouns = {path[0] for path in COMMANDS}
    assert nouns >= {"kafka", "topics", "config", "project", "recover", "replay", "snapshot", "snapshots"}
    assert ("config", "set") in COMMANDS and ("config", "show") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="rewind")
    assert result.exit_code == 0, result.output
    assert "Usage: rewind " + " ".join(path) in " ".join(result.output.split())


def test_an_unknown_command_is_bad_usage() -> None:
    result = run_rewind("recovr")
    assert result.returncode == 2
    assert "No such command 'recovr'" in result.stderr


def test_recover_does_not_load_the_service_or_the_simulator() -> None:
    """`rewind recover` is on the clock after a crash: it must not import what other nouns use."""
    script = (
        "import sys\n"
        "from rewind.cli import cli\n"
        "cli.main(['recover', '--help'], standalone_mode=False)\n"
        "heavy = [m for m in ('aiohttp', 'rewind.service', 'producers.simulator') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"
