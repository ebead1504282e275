"""Struct: how the CLI hands docker's structs (an image, its config) to ``--format``
templates. Its own module, so that building rows does not load the template engine
(:mod:`imagestore.cli.template`), which a command's default output may not need."""

from __future__ import annotations

from typing import Any


class Struct(dict[str, Any]):
    """A Go struct: its fields are its keys; an unknown field is an error."""
