"""Small helpers the command-line tests share: run ``main``, read the PNGs it writes."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from multidiffusion.interfaces.cli.main import main


def exit_code(argv: list[str]) -> int:
    """main()'s status, also when argparse exits on its own (usage errors)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def one_error_line(capfd) -> str:
    """The one ``error: …`` line the last command wrote to stderr (and nothing else, no traceback)."""
    err = capfd.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def pixels(path: Path) -> bytes:
    """A PNG's pixel bytes."""
    with Image.open(path) as image:
        return image.tobytes()


def recipe(path: Path) -> dict:
    """The JSON recipe a PNG written by this tool records."""
    with Image.open(path) as image:
        return json.loads(image.text["multidiffusion"])


FAST = ["--height", "128", "--width", "384", "--steps", "2", "-q"]
"""Options that make a panorama on the small test model quick."""


def assert_one_line_error(capfd, message: str) -> None:
    """Exactly one ``error: …`` line containing ``message`` on stderr, and no traceback."""
    err = capfd.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err
