"""A run whose page goes away stops (issue 31, item 5): Gradio closes the event's generator when its client
disconnects; the run then ends at its next step, and the next run is accepted, not refused."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui import widgets
from multidiffusion.interfaces.ui.session import Cancelled, UiSession
from tests.helpers.slow_pipeline import STEPS, SlowPipeline, steps_once_still


def test_a_closed_page_stops_its_run_within_a_step_and_frees_the_session(tmp_path, monkeypatch):
    monkeypatch.setattr(widgets, "HEARTBEAT_S", 0.02)
    session = UiSession(out_dir=tmp_path)
    pipe = SlowPipeline(step_s=0.01)
    events = widgets.streamed(session, "toy", lambda preview, stop: session.run(pipe, None, None, stop))
    next(events)  # the page has its first update (a heartbeat: this run makes no previews)
    assert pipe.started.wait(5)
    while len(pipe.steps) < 20:
        time.sleep(0.01)
    at_close = len(pipe.steps)
    events.close()  # what Gradio does when the client has gone
    taken = steps_once_still(pipe, 10.0)
    assert taken - at_close <= 3, (at_close, taken)  # the step under way, and one taken while closing
    assert taken < STEPS
    second = SlowPipeline(step_s=0.001)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()  # end the second run too, once it has shown that it runs
    with pytest.raises(Cancelled):
        session.run(second, None, None, stop)
    assert len(second.steps) > 10  # accepted, and it ran


def test_a_run_asked_for_while_another_stops_waits_for_it(tmp_path):
    """Page A goes away during a slow step; page B's run, asked for at once, waits for A's to end instead of being
    refused. While A runs on, unstopped, B is refused as before."""
    session = UiSession(out_dir=tmp_path)
    slow = SlowPipeline(step_s=0.3)
    stop_a = threading.Event()
    outcome: dict[str, Any] = {}

    def page_a() -> None:
        try:
            session.run(slow, None, None, stop_a)
        except Cancelled as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=page_a)
    thread.start()
    assert slow.started.wait(5)
    with pytest.raises(InvalidInputError, match="already running"):
        session.run(SlowPipeline(0.001), None, None, threading.Event())
    stop_a.set()
    quick = SlowPipeline(step_s=0.001)
    stop_b = threading.Event()
    threading.Timer(0.5, stop_b.set).start()
    with pytest.raises(Cancelled):
        session.run(quick, None, None, stop_b)
    thread.join(5)
    assert isinstance(outcome.get("a"), Cancelled) and len(slow.steps) <= 3
    assert len(quick.steps) > 10


def test_a_page_gone_before_its_run_starts_runs_nothing(tmp_path):
    session = UiSession(out_dir=tmp_path)
    stop = threading.Event()
    stop.set()
    pipe = SlowPipeline(step_s=0.001)
    with pytest.raises(Cancelled, match="the page that asked for this run is gone"):
        session.run(pipe, None, None, stop)
    assert pipe.steps == []


def test_a_finished_run_is_not_stopped_by_its_page_closing(tmp_path, monkeypatch):
    """The generator ends normally: nothing is set that would stop the next run."""
    monkeypatch.setattr(widgets, "HEARTBEAT_S", 0.02)
    session = UiSession(out_dir=tmp_path)
    stops: list[threading.Event] = []

    def job(preview: Any, stop: threading.Event) -> str:
        stops.append(stop)
        return "done.png"

    updates = list(widgets.streamed(session, "toy", job))
    assert updates[-1][1] == "done.png" and not stops[0].is_set() and not session.stopping()
