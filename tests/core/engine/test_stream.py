"""Stream batching (core/engine/stream.py): runs of the one loop in threads share one model call per tick, each row
with its own run's timestep, and each run ends bit-identical to the same run alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from diffusers import DDIMScheduler

from multidiffusion.core import panorama_tasks, sample
from multidiffusion.core.engine.stream import StreamBatcher
from multidiffusion.core.errors import InvalidInputError

H, W, WINDOW, STRIDE, STEPS = 8, 20, 8, 4, 6


class RowDenoiser:
    """Row-independent and non-linear, with a timestep per row: 0.1·x + tanh(x) · (1 + t/1000) + condition."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: Any, conds: Sequence[Any], views: Any = None) -> torch.Tensor:
        rows = x.shape[0]
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1)
        tt = tt.expand(rows) if tt.numel() == 1 else tt
        assert tt.shape == (rows,)
        self.calls.append((rows, tt.clone()))
        cond = torch.cat([torch.as_tensor(c, dtype=x.dtype).reshape(-1) for c in conds])
        n = rows // len(conds)
        cond = cond.repeat_interleave(n)[:, None, None, None]
        return 0.1 * x + torch.tanh(x) * (1 + tt[:, None, None, None] / 1000) + cond


def _scheduler() -> DDIMScheduler:
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(STEPS)
    return scheduler


def _run(denoiser: Any, seed: int, colour: float, callback: Any = None) -> torch.Tensor:
    x_T = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(seed))
    tasks = panorama_tasks(H, W, WINDOW, STRIDE)
    return sample(denoiser, _scheduler(), x_T, tasks, [torch.tensor([colour])], callback=callback)


def _stream(batcher: StreamBatcher, jobs: list[tuple[int, float]], stagger: bool) -> list[torch.Tensor]:
    """Each job (seed, colour) an ordinary run in its own thread on a member of ``batcher``; with ``stagger``, job k
    starts once k ticks have run (so the runs are at different steps), and each leaves after its last step."""
    results: list[torch.Tensor | None] = [None] * len(jobs)
    threads = []

    def work(k: int, member: Any) -> None:
        def leave_after_last(state: Any) -> None:
            if state.step_index == state.num_steps - 1:
                member.leave()

        try:
            results[k] = _run(member, *jobs[k], callback=leave_after_last)
        finally:
            member.leave()

    def start(k: int) -> None:
        thread = threading.Thread(target=work, args=(k, batcher.join()))
        thread.start()
        threads.append(thread)

    if stagger:  # run k joins after tick k, from the batcher's tick listener: before the next call is gathered
        batcher.add_tick_listener(lambda: start(batcher.stats.calls) if batcher.stats.calls < len(jobs) else None)
        start(0)
        batcher.wait_for_calls(len(jobs) + STEPS - 1, timeout=60)
    else:
        members = [batcher.join() for _ in jobs]
        for k, member in enumerate(members):
            thread = threading.Thread(target=work, args=(k, member))
            thread.start()
            threads.append(thread)
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


@pytest.mark.parametrize("stagger", [False, True])
def test_runs_in_a_stream_equal_the_runs_alone_bit_for_bit(stagger):
    jobs = [(0, 0.5), (1, -0.25), (2, 1.0), (3, 0.0)]
    alone = [_run(RowDenoiser(), *job) for job in jobs]
    model = RowDenoiser()
    batcher = StreamBatcher(model)
    streamed = _stream(batcher, jobs, stagger)
    for a, b in zip(alone, streamed, strict=True):
        assert torch.equal(a, b)
    # every run's steps went through shared calls: 4 runs × 6 steps in fewer calls, each with rows of several runs
    assert batcher.stats.calls < len(jobs) * STEPS
    assert batcher.stats.widest >= 2
    if stagger:  # runs at different steps in one call: a timestep per row, not all equal
        assert any(t.unique().numel() > 1 for _, t in model.calls)
        # run k starts at tick k: STEPS + 3 ticks in all, the middle ones serving all four runs
        assert batcher.stats.calls == STEPS + len(jobs) - 1
        assert batcher.stats.members_per_call == [1, 2, 3, 4, 4, 4, 3, 2, 1]


def test_a_model_error_reaches_every_run_and_none_hangs():
    def broken(x: torch.Tensor, t: Any, conds: Sequence[Any], views: Any = None) -> torch.Tensor:
        raise RuntimeError("the model failed")

    batcher = StreamBatcher(broken)
    members = [batcher.join(), batcher.join()]
    errors: list[BaseException] = []

    def work(member: Any) -> None:
        try:
            _run(member, 0, 0.0)
        except RuntimeError as exc:
            errors.append(exc)
        finally:
            member.leave()

    threads = [threading.Thread(target=work, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [str(e) for e in errors] == ["the model failed"] * 2


def test_a_member_that_left_makes_no_calls():
    batcher = StreamBatcher(RowDenoiser())
    member = batcher.join()
    member.leave()
    member.leave()  # idempotent
    with pytest.raises(InvalidInputError, match="has left"):
        member(torch.zeros(1, 3, 2, 2), torch.tensor(1), [0.0])
