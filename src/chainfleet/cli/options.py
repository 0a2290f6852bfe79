"""Options that more than one command takes, written once so their flags and help agree.

Example::

    @cli.command("compare")
    @input_option
    def compare_command(input_file: str) -> None: ...
"""

from __future__ import annotations

import click

__all__ = ["input_option"]

#: ``--input FILE`` / ``-i FILE``, required, passed as ``input_file``
input_option = click.option(
    "--input",
    "-i",
    "input_file",
    required=True,
    metavar="FILE",
    help="Items: .txt (a line each), .jsonl (an object each) or .csv (a header row).",
)
