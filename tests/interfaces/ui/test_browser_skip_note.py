"""Without chromium the browser tests are skipped, and the run ends with one line saying so and how to get them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

BROWSER_TESTS = REPO_ROOT / "tests" / "interfaces" / "ui" / "test_browser.py"
pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.mark.heavy
def test_skipped_browser_tests_end_the_run_with_one_note(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with python and nothing else: no chromium
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "MULTIDIFFUSION_REQUIRE_BROWSER"}
    env["PATH"] = str(bin_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--full", str(BROWSER_TESTS)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in lines if line.startswith("note:") and "browser test" in line]
    assert len(notes) == 1 and "apt-get install chromium" in notes[0]
    assert lines.index(notes[0]) == len(lines) - 2  # just before pytest's "N skipped in …" line
