"""Regenerate the CLI reference in docs/cli.md from every subcommand's ``--help``.

Usage: ``python scripts/update_cli_docs.py`` (tests/docs/test_readme.py checks docs/cli.md is current).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BEGIN, END = "<!-- cli-reference:begin -->", "<!-- cli-reference:end -->"


def cli_help() -> str:
    """The help text of every subcommand, each after its command line, formatted at 100 columns."""
    os.environ["COLUMNS"] = "100"
    from multidiffusion.interfaces.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return "\n\n".join(f"$ multidiffusion {name} --help\n{p.format_help().rstrip()}" for name, p in sub.choices.items())


def render() -> str:
    return f"{BEGIN}\n```text\n{cli_help()}\n```\n{END}"


def current() -> str:
    match = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), CLI_DOC.read_text(), flags=re.S)
    return match.group(0) if match else ""


if __name__ == "__main__":
    text = CLI_DOC.read_text()
    if BEGIN not in text:
        sys.exit(f"{CLI_DOC} has no {BEGIN} marker")
    CLI_DOC.write_text(text.replace(current(), render()))
    print(f"updated {CLI_DOC}")
