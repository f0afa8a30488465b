"""Stream batching (StreamDiffusion, Kodaira et al. 2023, as StreamMultiDiffusion / SemanticDraw, Lee et al. CVPR 2025,
uses it for regions): several runs of the one loop, each a canvas at its own step, share one model call per tick.

Each run is an ordinary :func:`~multidiffusion.core.engine.sampling.sample` in a thread of its own, whose model is a
:class:`StreamMember` of one :class:`StreamBatcher`. A member's call waits until every member of the batcher has made
its call (or left); then the rows of all of them go to the model at once, each row with its own run's timestep, and
each run gets its own rows back. The loop itself is unchanged (fuse, then one scheduler step: docs/design.md §3), so a
run in a stream is an ordinary run: with a model whose rows do not depend on one another, bit for bit (the toy model;
docs/live.md measures it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import Denoiser


@dataclass
class _Call:
    """One member's pending model call, and its answer once the tick has run."""

    x: Tensor
    t: Tensor
    conds: Sequence[Any]
    views: Sequence[View] | None
    result: Tensor | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class StreamStats:
    """What a batcher has done: model calls made, rows through the model, and the most runs one call served."""

    calls: int = 0
    rows: int = 0
    widest: int = 0
    members_per_call: list[int] = field(default_factory=list)


class StreamBatcher:
    """Gathers the model calls of concurrent runs into one call per tick.

    Args:
        denoiser: The model (a :class:`~multidiffusion.core.types.Denoiser`) that takes a timestep per row: a tensor of
            shape (rows,) where the runs in a call are at different steps (a scalar where they are all at one).

    :meth:`add_tick_listener` adds a function called after each model call, before any caller gets its rows: a member
    joined there takes part in the very next call (a stream starts a frame every tick so). Several streams may share
    one batcher (a web page's tabs): the model then makes one call at a time for all of them.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser
        self._listeners: list[Callable[[], None]] = []
        self.stats = StreamStats()
        self._lock = threading.Condition()
        self._members = 0
        self._pending: list[_Call] = []

    def join(self) -> StreamMember:
        """A new member: its calls wait for every other member's from now on, until it leaves."""
        with self._lock:
            self._members += 1
        return StreamMember(self)

    def add_tick_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every model call from now on."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_tick_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener``; it may not be listening."""
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not listener]

    def wait_for_calls(self, count: int, timeout: float | None = None) -> bool:
        """Block until the batcher has made ``count`` model calls (ticks); returns whether it had, within ``timeout``
        seconds (None: no limit)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.stats.calls >= count, timeout)

    def _leave(self) -> None:
        with self._lock:
            self._members -= 1
            ready = self._take_if_all_called()
        if ready:
            self._run(ready)

    def _call(self, call: _Call) -> Tensor:
        with self._lock:
            self._pending.append(call)
            ready = self._take_if_all_called()
        if ready:
            self._run(ready)
        with self._lock:
            while not call.done:
                self._lock.wait()
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _take_if_all_called(self) -> list[_Call]:
        """The pending calls when every member has one (each waits for its answer, so has at most one); the lock is
        held."""
        if self._pending and len(self._pending) >= self._members:
            ready, self._pending = self._pending, []
            return ready
        return []

    def _run(self, calls: list[_Call]) -> None:
        """One model call for ``calls``' rows, each row with its run's timestep; every caller is woken with its rows."""
        try:
            outputs = self._model(calls)
        except BaseException as exc:  # every waiting run fails with the model's error, none hangs
            with self._lock:
                for call in calls:
                    call.error, call.done = exc, True
                self._lock.notify_all()
            return
        with self._lock:
            self.stats.calls += 1
            listeners = self._listeners
        error: BaseException | None = None
        for listener in listeners:
            try:
                listener()
            except BaseException as exc:  # the callers fail with it rather than hang
                error = exc
        if error is not None:
            with self._lock:
                for call in calls:
                    call.error, call.done = error, True
                self._lock.notify_all()
            return
        with self._lock:
            for call, out in zip(calls, outputs, strict=True):
                call.result, call.done = out, True
            self.stats.rows += sum(c.x.shape[0] for c in calls)
            self.stats.widest = max(self.stats.widest, len(calls))
            self.stats.members_per_call.append(len(calls))
            self._lock.notify_all()

    def _model(self, calls: list[_Call]) -> list[Tensor]:
        if len(calls) == 1:  # one run in flight: its own call, exactly
            c = calls[0]
            return [self.denoiser(c.x, c.t, c.conds, views=c.views)]
        per_cond = {c.x.shape[0] // max(len(c.conds), 1) for c in calls}
        if len(per_cond) != 1:
            raise InvalidInputError("stream batching needs the same number of canvases per call in every run")
        rows = [c.x.shape[0] for c in calls]
        times = [torch.as_tensor(c.t).reshape(-1) for c in calls]
        if all(t.numel() == 1 for t in times) and all(bool(t == times[0]) for t in times):
            t = calls[0].t  # one step for all: the timestep as each run alone would give it
        else:
            t = torch.cat([tt.expand(n) if tt.numel() == 1 else tt for tt, n in zip(times, rows, strict=True)])
        x = torch.cat([c.x for c in calls])
        conds = [cond for c in calls for cond in c.conds]
        views = None if any(c.views is None for c in calls) else [v for c in calls for v in c.views]  # type: ignore[union-attr]
        out = self.denoiser(x, t, conds, views=views)
        return list(out.split(rows))


class StreamMember:
    """One run's model in a :class:`StreamBatcher`: a :class:`~multidiffusion.core.types.Denoiser` whose calls are
    answered at the tick when every member has called. Call :meth:`leave` once the run makes no more model calls
    (after its last step), or the others would wait for it."""

    def __init__(self, batcher: StreamBatcher) -> None:
        self._batcher = batcher
        self._left = False

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        if self._left:
            raise InvalidInputError("this stream member has left its batcher and can make no more model calls")
        return self._batcher._call(_Call(x, t, conds, views))

    def leave(self) -> None:
        """No more calls from this run; idempotent."""
        if not self._left:
            self._left = True
            self._batcher._leave()
