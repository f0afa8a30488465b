"""A new user's first hour, round two: the small wording fixes (issue item 7), each checked where a user sees it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from multidiffusion.interfaces.cli.main import build_parser, main
from tests.helpers.cli import exit_code, one_error_line


def test_no_help_shows_a_default_of_none_for_a_required_option():
    os.environ.setdefault("COLUMNS", "100")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        assert "(default: None)" not in command.format_help(), name


@pytest.mark.parametrize(
    ("flags", "verb"),
    [(["--sync-weight", "5"], "only applies with --sync"), (["--sync-weight", "5", "--sync-every", "2"], "only apply")],
)
def test_a_sync_option_without_sync_agrees_in_number(tmp_path, capfd, flags, verb):
    out = tmp_path / "x.png"
    assert exit_code(["panorama", "sky", "--model", "toy", *flags, "--out", str(out)]) == 2
    assert verb in one_error_line(capfd)
    assert not out.exists()


def test_eval_coherence_does_not_suggest_an_option_it_lacks(tmp_path, capfd):
    pytest.importorskip("torch")
    try:
        import lpips  # noqa: F401

        pytest.skip("lpips is installed here: no notice to check")
    except ImportError:
        pass
    image = tmp_path / "x.png"
    assert main(["panorama", "sky", "--model", "toy", "--height", "32", "--width", "96", "--steps", "2", "-q",
                 "--out", str(image)]) == 0  # fmt: skip
    capfd.readouterr()
    assert main(["eval-coherence", str(image), "--crop", "32"]) == 0
    err = capfd.readouterr().err
    assert "LPIPS" in err and "--sync-loss" not in err


@pytest.mark.heavy
def test_quiet_prints_no_lpips_fallback_notice(tmp_path):
    try:
        import lpips  # noqa: F401

        pytest.skip("lpips is installed here: no fallback to be quiet about")
    except ImportError:
        pass
    argv = ["panorama", "red or blue", "--model", "toy", "--height", "16", "--width", "64", "--window", "16"]
    argv += ["--stride", "8", "--steps", "2", "--sync", "--sync-stop-step", "1", "--out", str(tmp_path / "x.png")]

    def stderr(*extra: str) -> str:  # a process of its own: pytest records warnings in-process instead of printing
        command = [sys.executable, "-m", "multidiffusion", *argv, *extra]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert stderr().count("using the built-in statistics loss") == 1
    assert stderr("-q") == ""
