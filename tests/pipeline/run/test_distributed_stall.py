"""A rank that stops (SIGSTOP) or dies (SIGKILL) in the middle of a run ends the other with one ``error:`` line and
no traceback, within the step timeout (docs/distributed.md, "Failures"): 2 ranks of the command line under
torchrun, gloo on the CPU."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from multidiffusion.core.errors import OutputError, ProcessGroupError
from multidiffusion.pipeline.run import distributed
from tests.helpers import REPO_ROOT
from tests.helpers.torchrun import rank_log, torchrun_started

WORKER = REPO_ROOT / "tests" / "helpers" / "distributed_worker.py"
FLOOR_S = 2.0  # the test's step-timeout floor; the library's is 30 s
# Generous: the floor, or 10× the slowest step of a toy canvas on a loaded 2-core machine, plus start-up noise.
ENDS_WITHIN_S = 90.0
# 400 steps of a 128×512 toy canvas: minutes, so the run is still going when a rank is stopped.
ARGV = ["panorama", "a lake", "--model", "toy", "--height", "128", "--width", "512", "--steps", "400", "--seed", "1"]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")


def _state(pid: int) -> str:
    """The process's state letter (``Z``: ended, not yet reaped; ``T``: stopped), or ``X`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def _ended(pid: int) -> bool:
    return _state(pid) in ("Z", "X")


def _wait_for(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true; returns the time it became true (fails the test past ``timeout``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _marks(steps: Path, rank: int) -> list[str]:
    path = steps / f"rank{rank}"
    return path.read_text().split() if path.exists() else []


@pytest.mark.heavy
@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_stalled_or_dead_rank_ends_the_run_with_one_error_line(tmp_path, sig):
    steps, logs = tmp_path / "steps", tmp_path / "logs"
    steps.mkdir()
    out = tmp_path / "x.png"
    launcher = torchrun_started(
        2, str(WORKER), "--cli", str(steps), str(FLOOR_S), *ARGV, "-q", "--out", str(out), log_dir=logs
    )
    pids: list[int] = []
    try:
        # Both ranks have taken 3 steps: the first step's warm-up allowance is behind them, the step timeout applies.
        _wait_for(lambda: all(len(_marks(steps, r)) >= 4 for r in (0, 1)), 240, "both ranks to take 3 steps")
        pids = [int(_marks(steps, r)[0]) for r in (0, 1)]
        os.kill(pids[1], sig)
        stopped = time.monotonic()
        ended = _wait_for(lambda: _ended(pids[0]), ENDS_WITHIN_S, "rank 0 to end")
        if sig == signal.SIGSTOP:
            os.kill(pids[1], signal.SIGCONT)  # rank 1 then ends too: its peer is gone, or the launcher's SIGTERM
        launcher.communicate(timeout=60)
    finally:
        for pid in pids:
            if not _ended(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.communicate()
    print(f"{sig.name}: rank 0 ended {ended - stopped:.1f} s after rank 1 was signalled")
    assert launcher.returncode != 0
    err = rank_log(logs, 0)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert "another process of this run" in errors[0]
    if sig == signal.SIGSTOP:
        assert "did not answer within" in errors[0]
        assert ended - stopped < ENDS_WITHIN_S
    else:
        assert "ended or lost its connection" in errors[0]
    for rank in (0, 1):
        assert "Traceback" not in rank_log(logs, rank), rank_log(logs, rank)[-3000:]
    assert not out.exists()


def test_the_step_timeout_follows_the_slowest_step_with_a_floor():
    now = [0.0]
    pace = distributed.StepPace(floor=30.0, factor=10.0, clock=lambda: now[0])
    assert pace.timeout() == distributed.COLLECTIVE_TIMEOUT  # before any step: model loads, warm-up
    pace.finished()  # the generator broadcast before the first step
    assert pace.timeout() == distributed.COLLECTIVE_TIMEOUT
    now[0] = 120.0  # a first step of 2 minutes (warm-up, compilation)
    pace.finished()
    assert pace.timeout() == timedelta(seconds=1200)  # 10 × the slowest step so far
    pace2 = distributed.StepPace(floor=30.0, factor=10.0, clock=lambda: now[0])
    pace2.finished()
    now[0] += 0.5  # half-second steps
    pace2.finished()
    assert pace2.timeout() == timedelta(seconds=30)  # the floor


def test_collective_failures_become_one_line_errors():
    pace = distributed.StepPace(floor=30.0, factor=10.0)
    lost = pace.failure(
        RuntimeError("[gloo/pair.cc:537] Read error [127.0.0.1]:40326: Connection reset by peer"), pace.timeout()
    )
    assert isinstance(lost, ProcessGroupError) and isinstance(lost, OutputError)  # the CLI prints it, exit 1
    assert "127.0.0.1" not in str(lost) and "\n" not in str(lost)
    pace.slowest = 2.0
    waited = pace.timeout()
    late = pace.failure(RuntimeError("Timed out waiting 30000ms for recv operation to complete"), waited)
    assert str(late).startswith("another process of this run did not answer within 30 s (10× its slowest step")
