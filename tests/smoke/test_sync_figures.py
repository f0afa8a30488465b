"""The SyncDiffusion figures script runs in its smoke mode and writes both tables; no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT


@pytest.mark.heavy
def test_sync_figures_smoke(tmp_path):
    script = ROOT / "scripts" / "sync_figures.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "sync_figures.json").read_text())
    assert [r["run"].split(",")[0] for r in data["coherence"]] == ["red (one colour)", "red or blue", "red or blue"]
    assert [r["config"] for r in data["cost"]] == ["plain", "sync"]
    assert all(r["peak_mib"] >= 0 and r["seconds"] > 0 for r in data["cost"])
    assert "| configuration |" in (tmp_path / "sync_figures.md").read_text()
