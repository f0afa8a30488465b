"""The README's commands and CLI reference match the code; CI runs the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
sys.path.insert(0, str(ROOT / "scripts"))

import update_cli_docs  # noqa: E402


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.*)'$", ci, flags=re.M).group(1)
    readme = (ROOT / "README.md").read_text()
    assert f"\n{command}\n" in readme


def test_cli_reference_is_current():
    assert update_cli_docs.current() == update_cli_docs.render(), (
        "docs/cli.md's CLI reference is stale: run python scripts/update_cli_docs.py"
    )


def test_ruff_clean():
    for args in (
        ["check", "src", "tests", "scripts", "bench"],
        ["format", "--check", "src", "tests", "scripts", "bench"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
