"""Live painting: frames of a region layout streamed while it is edited (docs/live.md).

A :class:`LiveCanvas` starts a frame every tick, each an ordinary region run (:func:`run_regions`) in a thread of its
own whose model is a member of one :class:`~multidiffusion.core.engine.stream.StreamBatcher`: the views of every frame
in flight go to the model in one call per tick, each frame at its own step. After the first frame's steps, every tick
finishes a frame. An edit (:meth:`LiveCanvas.update`) is checked at once and drawn by the next frame that starts; the
frames in flight finish with the scene they started with, or stop and are dropped (``drop_stale``).

With no edits every frame is the ordinary run of its scene and seed (``pipe.regions(..., generator=
torch.Generator().manual_seed(seed))``): on the toy model bit for bit, on a network to float rounding, since a
convolution's arithmetic may depend on the batch it is in.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from multidiffusion.core.engine.stream import StreamBatcher, StreamMember, StreamStats
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.regions import RegionPlan, run_regions
from multidiffusion.pipeline.run.options import RunOptions

MAX_IN_FLIGHT = 64
"""The most frames a stream keeps in flight (each holds its canvas and the views' batch rows)."""


@dataclass(frozen=True)
class LiveScene:
    """What the frames of a live canvas draw: the arguments of a region run, and its seed.

    Attributes:
        regions: The prompts and their masks or boxes (:class:`~multidiffusion.core.features.regions.Region`).
        background: The prompt of the cells no region covers (a string or a ``Background``), or None.
        height, width: The canvas, px.
        seed: The seed of every frame (a still picture while nothing changes), or of frame 0 with ``vary_seed``.
        vary_seed: Frame k draws with ``seed + k``: a new picture every frame.
        num_inference_steps: Steps per frame: 1–8 for few-step models (LCM, Turbo, Lightning, schnell) and the
            toy model; a many-step model works, but a frame then takes as many ticks.
        scheduler: As for a region run (None: the model's).
        guidance_scale: As for a region run (None: the model's).
        negative_prompt: As for a region run.
    """

    regions: tuple[Region, ...]
    background: str | Background | None = None
    height: int = 512
    width: int = 512
    seed: int = 0
    vary_seed: bool = False
    num_inference_steps: int = 4
    scheduler: str | None = None
    guidance_scale: float | None = None
    negative_prompt: str = ""

    def seed_of(self, index: int) -> int:
        """The seed frame ``index`` draws with."""
        return self.seed + index if self.vary_seed else self.seed


@dataclass(frozen=True)
class LiveFrame:
    """A finished frame.

    Attributes:
        index: Frames started before this one.
        image: The picture (PIL), with the recipe of its ordinary run in ``output.metadata``.
        output: The run's :class:`~multidiffusion.pipeline.run.output.MultiDiffusionOutput` (``output.save(path)``).
        version: The scene it drew: 0 for the first, then one more per :meth:`LiveCanvas.update`.
        seed: The seed it drew with.
        started, finished: The stream's model calls (ticks) made when it started and when it finished.
        seconds: Wall time from its start to its end.
    """

    index: int
    image: Any
    output: Any
    version: int
    seed: int
    started: int
    finished: int
    seconds: float


class _PromptCache:
    """The model's prompt encoder, remembering each prompt set it encoded: a live canvas encodes its prompts once,
    not once per frame. A rewrite of nothing (``expand``) over ``encode``, so prompt weighting finds the encoder."""

    def __init__(self, encode: Any) -> None:
        self.encode = encode
        self._lock = threading.Lock()
        self._known: dict[tuple[str, ...], Any] = {}

    @staticmethod
    def expand(text: str) -> str:
        return text

    def __call__(self, texts: Sequence[str]) -> Any:
        key = tuple(texts)
        with self._lock:
            if key not in self._known:
                self._known[key] = self.encode(list(texts))
            return self._known[key]


@dataclass
class _Scene:
    """A checked scene: its version and the region plan the frames run."""

    version: int
    scene: LiveScene
    background: Background | None
    plan: RegionPlan


@dataclass
class _Flight:
    """A frame in flight."""

    index: int
    scene: _Scene
    started: int
    start_time: float
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    finished: int = 0  # the stream's model calls when it was done
    seconds: float = 0.0  # from its start to its end


class LiveCanvas:
    """A stream of frames of a region layout that can change while it runs.

    Args:
        pipe: A :class:`~multidiffusion.pipeline.facade.MultiDiffusionPipeline`.
        scene: What to draw first; checked now (one line if wrong, as a region run would say it).
        in_flight: The most frames at once: ``num_inference_steps + 1`` (default) starts one every tick, so every tick
            finishes one; 1 makes one frame at a time (regenerating from scratch).
        drop_stale: On an edit, stop the frames that started before it and drop them, rather than finish them.
        batcher: A :class:`~multidiffusion.core.engine.stream.StreamBatcher` of ``pipe``'s model to share with other
            live canvases (one model call at a time for all of them); None: one of its own.

    Use :meth:`frames` to draw, :meth:`update` from anywhere (another thread: a UI's events) to edit, :meth:`pause`,
    :meth:`resume` and :meth:`close`. Sync, checkpoints and image starts are not streamed.
    """

    def __init__(
        self,
        pipe: Any,
        scene: LiveScene,
        *,
        in_flight: int | None = None,
        drop_stale: bool = False,
        batcher: StreamBatcher | None = None,
    ) -> None:
        steps = scene.num_inference_steps
        # one more than the steps: at a tick's end the frame that made its last call still holds its place while the
        # next one joins, so every tick starts a frame
        self.in_flight = steps + 1 if in_flight is None else in_flight
        if isinstance(self.in_flight, bool) or not isinstance(self.in_flight, int):
            raise InvalidInputError(f"in_flight must be a whole number of frames, got {self.in_flight!r}")
        if not 1 <= self.in_flight <= MAX_IN_FLIGHT:
            raise InvalidInputError(f"in_flight must be in 1…{MAX_IN_FLIGHT} frames, got {self.in_flight}")
        self.pipe = pipe
        self.drop_stale = drop_stale
        self._batcher = batcher if batcher is not None else StreamBatcher(pipe.model.denoiser)
        self._model = dataclasses.replace(pipe.model, encode_prompts=_PromptCache(pipe.model.encode_prompts))
        self._lock = threading.Lock()
        self._scene = self._checked(scene, 0)
        self._flights: dict[int, _Flight] = {}  # started and still making model calls
        self._threads: list[threading.Thread] = []  # every frame's, until it ended
        self._done: queue.Queue[tuple[_Flight, Any, BaseException | None]] = queue.Queue()
        self._started = 0
        self._next = 0  # the next frame to yield, in start order
        self._count: int | None = None  # frames the running frames() call wants; None: until closed
        self._yielded = 0
        self._paused = False
        self._closed = False
        self._batcher.add_tick_listener(self._start_if_due)

    @property
    def stats(self) -> StreamStats:
        """The stream's model calls so far (ticks), rows, and the most frames one call served."""
        return self._batcher.stats

    @property
    def scene(self) -> LiveScene:
        """The scene the next frame draws."""
        return self._scene.scene

    @property
    def version(self) -> int:
        """The version of :attr:`scene`: 0, then one more per update."""
        return self._scene.version

    def _checked(self, scene: LiveScene, version: int) -> _Scene:
        if not isinstance(scene, LiveScene):
            raise InvalidInputError(f"a live canvas draws a LiveScene, got {type(scene).__name__}")
        background = Background(scene.background) if isinstance(scene.background, str) else scene.background
        plan = self.pipe.check_regions(
            list(scene.regions),
            background,
            scene.height,
            scene.width,
            scene.negative_prompt,
            scene.num_inference_steps,
            scene.guidance_scale,
            scheduler=scene.scheduler,
        )
        return _Scene(version, scene, background, plan)

    def update(self, **changes: Any) -> int:
        """Change the scene (any :class:`LiveScene` field): checked now, drawn by the next frame that starts.
        Returns the new version. With ``drop_stale`` the frames in flight stop at their next step and are dropped."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(LiveScene)})
        if unknown:
            names = ", ".join(f.name for f in dataclasses.fields(LiveScene))
            raise InvalidInputError(f"unknown scene field(s) {', '.join(unknown)}; a scene has: {names}")
        if "regions" in changes:
            changes["regions"] = tuple(changes["regions"])
        with self._lock:
            current = self._scene
        checked = self._checked(dataclasses.replace(current.scene, **changes), current.version + 1)
        with self._lock:
            self._scene = checked
            if self.drop_stale:
                for flight in self._flights.values():
                    flight.stop.set()
        return checked.version

    def pause(self) -> None:
        """Start no new frame; those in flight finish."""
        self._paused = True

    def resume(self) -> None:
        """Start frames again."""
        self._paused = False

    def close(self) -> None:
        """Stop: frames in flight end at their next step and are dropped; :meth:`frames` returns."""
        with self._lock:
            self._closed = True
            for flight in self._flights.values():
                flight.stop.set()
        self._batcher.remove_tick_listener(self._start_if_due)
        self._join_threads()

    def frames(self, count: int | None = None, idle_s: float | None = None) -> Iterator[LiveFrame | None]:
        """Draw frames, yielding each once it and every frame started before it are done, so in the order they
        started (a dropped one is skipped): ``count`` of them, or until :meth:`close`. With ``idle_s``, None is
        yielded after that many seconds without a frame (paused, or slow), so a caller can look around (a web page
        that went away). A frame whose run failed raises its error here."""
        self._count, self._yielded = count, 0
        done: dict[int, tuple[_Flight, Any, BaseException | None]] = {}
        last = time.perf_counter()
        try:
            while not self._closed and (count is None or self._yielded < count):
                self._start_if_due()
                try:
                    flight, output, error = self._done.get(timeout=0.01)
                except queue.Empty:
                    if idle_s is not None and time.perf_counter() - last >= idle_s:
                        last = time.perf_counter()
                        yield None
                    continue
                done[flight.index] = (flight, output, error)
                while self._next in done and (count is None or self._yielded < count):
                    flight, output, error = done.pop(self._next)
                    self._next += 1
                    if error is not None:
                        raise error
                    if output is None:  # stopped by an edit or close: dropped
                        continue
                    self._yielded += 1
                    last = time.perf_counter()
                    yield LiveFrame(
                        index=flight.index,
                        image=output.images[0],
                        output=output,
                        version=flight.scene.version,
                        seed=flight.scene.scene.seed_of(flight.index),
                        started=flight.started,
                        finished=flight.finished,
                        seconds=flight.seconds,
                    )
        finally:
            if count is not None and self._yielded >= count:
                self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        """After the last frame asked for: stop the others (they would only be dropped) and wait for their threads."""
        with self._lock:
            for flight in self._flights.values():
                flight.stop.set()
        self._join_threads()

    def _join_threads(self) -> None:
        """Wait for every frame's thread to end (they end at their next step once stopped)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=60)

    def _start_if_due(self) -> None:
        """Start a frame when none started this tick, fewer than ``in_flight`` are in flight and more are wanted
        (called by :meth:`frames` and after every tick, so a frame can start at each)."""
        with self._lock:
            count = self._count
            wanted = count is None or self._started < count + self._next - self._yielded  # dropped ones are redone
            ticks = self._batcher.stats.calls
            due = not self._flights or max(f.started for f in self._flights.values()) < ticks
            if self._paused or self._closed or not wanted or len(self._flights) >= self.in_flight or not due:
                return
            flight = _Flight(self._started, self._scene, ticks, time.perf_counter())
            self._started += 1
            self._flights[flight.index] = flight
            member = self._batcher.join()
        flight.thread = threading.Thread(target=self._fly, args=(flight, member), daemon=True, name="live-frame")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [flight.thread]
        flight.thread.start()

    def _land(self, flight: _Flight, member: StreamMember) -> None:
        """The frame makes no more model calls: it leaves the stream and frees its place for the next frame."""
        member.leave()
        with self._lock:
            self._flights.pop(flight.index, None)

    def _fly(self, flight: _Flight, member: StreamMember) -> None:
        """One frame: the ordinary region run of its scene and seed, its model calls batched with the others'."""
        scene = flight.scene

        def after_step(state: Any) -> bool:
            if state.step_index == state.num_steps - 1:
                self._land(flight, member)  # its last model call is made: it decodes out of the stream
            return flight.stop.is_set()

        output: Any = None
        error: BaseException | None = None
        try:
            run = RunOptions(
                torch.Generator().manual_seed(scene.scene.seed_of(flight.index)),
                callback_on_step_end=after_step,
                progress=False,
            )
            model = dataclasses.replace(self._model, denoiser=member)
            result = run_regions(
                model, list(scene.scene.regions), scene.background, scene.plan, run, cache=self.pipe.customisation_cache
            )
            output = None if flight.stop.is_set() else result
        except BaseException as exc:  # reported by frames(), in the caller's thread
            error = None if flight.stop.is_set() else exc
        finally:
            self._land(flight, member)
            flight.finished, flight.seconds = self._batcher.stats.calls, time.perf_counter() - flight.start_time
            self._done.put((flight, output, error))
