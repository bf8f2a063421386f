"""What every command shares: the global options, the effective settings and machine-readable output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rewind.ground.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_from(ctx: click.Context, **flags: object) -> Settings:
    """The effective settings for this command: global options plus the command's own flags.

    ``flags`` maps dotted setting keys to flag values; ``None`` means the flag was not given.
    """
    root = ctx.find_root()
    obj = root.obj or {}
    merged = dict(obj.get("flags", {}))
    merged.update(flags)
    return load_settings(
        flags=merged, kafka_flags=obj.get("kafka_props", ()), config_file=obj.get("config_file")
    )


def json_option(func: F) -> F:
    """``--json``: print one JSON document instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(func)


def echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))
