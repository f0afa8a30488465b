"""What the tabs share: the page's shared parts, the steps / guidance / seed fields, the Generate and Cancel buttons,
the preview / result / download column, the form's values as engine arguments, errors as page messages, and a run
streamed to the page."""

from __future__ import annotations

import functools
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.session import Cancelled, UiSession

HEARTBEAT_S = 1.0  # longest wait between a run's updates to the page
_QUOTED_PATH = re.compile(r"""(['"])((?:/|~/|[A-Za-z]:[\\/])[^'"]*)\1""")  # a path as repr() quotes it


@dataclass(frozen=True)
class Page:
    """What every tab's events share: the session, the model picker and the gallery of the session's images."""

    session: UiSession
    model: gr.Dropdown
    gallery: gr.Gallery


@dataclass(frozen=True)
class Sampling:
    """A tab's sampling fields; None where the tab has no such field."""

    steps: gr.Number
    seed: gr.Number
    scheduler: gr.Dropdown | None = None
    guidance: gr.Number | None = None


@dataclass(frozen=True)
class RunButtons:
    go: gr.Button
    stop: gr.Button


@dataclass(frozen=True)
class RunOutputs:
    """Where a run shows: its live preview, then its result and the file to download."""

    preview: gr.Image
    result: gr.Image
    download: gr.File


def sampling_fields(
    prefix: str, *, schedulers: Sequence[str] | None = None, guidance: bool = True, seed_label: str = "seed"
) -> Sampling:
    """Steps, a scheduler (where ``schedulers`` are given), guidance (0: the model's) and seed, in the current row;
    element ids start with ``prefix``."""
    steps = gr.Number(30, label="steps", precision=0, elem_id=f"{prefix}steps")
    scheduler = None
    if schedulers is not None:
        scheduler = gr.Dropdown(["", *schedulers], value="", label="scheduler", elem_id=f"{prefix}sched")
    scale = gr.Number(0, label="guidance (0: the model's)", elem_id=f"{prefix}guidance") if guidance else None
    seed = gr.Number(-1, label=seed_label, precision=0, elem_id=f"{prefix}seed")
    return Sampling(steps, seed, scheduler, scale)


def run_buttons(prefix: str, label: str = "Generate") -> RunButtons:
    """The run's button and Cancel, in the current row."""
    go = gr.Button(label, variant="primary", elem_id=f"{prefix}generate")
    return RunButtons(go, gr.Button("Cancel", elem_id=f"{prefix}cancel"))


def live_preview(prefix: str) -> gr.Image:
    """Where a run's x̂₀ shows while it runs."""
    return gr.Image(label="live preview (x̂₀, every 2 steps)", elem_id=f"{prefix}preview")


def result_and_download(prefix: str, download_label: str = "download") -> tuple[gr.Image, gr.File]:
    """Where a run's image shows, and its PNG (with its recipe) to download."""
    image = gr.Image(label="result", type="filepath", elem_id=f"{prefix}result")
    return image, gr.File(label=download_label, elem_id=f"{prefix}download")


def wire_run(
    page: Page, buttons: RunButtons, handler: Callable[..., Any], inputs: list[Any], outputs: RunOutputs
) -> None:
    """``handler(model, *inputs)`` on the run's button, one at a time, into ``outputs`` and the gallery; Cancel stops
    it."""
    shown = [outputs.preview, outputs.result, outputs.download, page.gallery]
    buttons.go.click(handler, [page.model, *inputs], shown, concurrency_limit=1)
    buttons.stop.click(page.session.cancel, None, None, queue=False)


def bind(fn: Callable[..., Any], *args: Any) -> Callable[..., Any]:
    """``fn`` with its first arguments given, under ``fn``'s name and docstring: Gradio names an event's API
    endpoint after its function (/panorama, /regions, …) and describes it with the docstring."""
    bound = functools.partial(fn, *args)
    bound.__name__ = fn.__name__  # type: ignore[attr-defined]
    bound.__doc__ = fn.__doc__
    return bound


def error(exc: BaseException) -> Exception:
    """``exc`` as a message in the page (its first line, with any quoted absolute path cut to its last part: the
    page must not show the server's folders), without a traceback."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return gr.Error(hide_paths(line), print_exception=False)


def hide_paths(line: str) -> str:
    """``line`` with each quoted absolute path (``'/tmp/x/y.png'``, or a Windows one) replaced by its last part
    (``'y.png'``)."""

    def last_part(match: re.Match[str]) -> str:
        quote, path = match.group(1), match.group(2)
        return quote + re.split(r"[/\\]+", path.rstrip("/\\"))[-1] + quote

    return _QUOTED_PATH.sub(last_part, line)


def unchanged(count: int) -> list[Any]:
    """Updates that leave ``count`` components as they are."""
    return [gr.update()] * count


def uploaded_path(file: Any) -> str:
    """The path of a file dropped on a gr.File (a path, or a file object with one)."""
    return file if isinstance(file, str) else file.name


def guidance_value(value: float | None) -> float | None:
    """The form's guidance: 0 or empty means the model's own default."""
    return None if not value else float(value)


def seed_generator(value: float | None) -> Any:
    """The form's seed as a generator; None (the pipeline draws one and records it) for -1 or empty."""
    import torch

    if value is None or int(value) < 0:
        return None
    return torch.Generator().manual_seed(int(value))


def denoising(progress: Any) -> Callable[[int, int], None]:
    """A run's ``progress(step, steps)`` on the page's progress bar."""
    return lambda i, n: progress((i, n), desc="denoising")


def streamed(session: UiSession, model: str, job: Callable[[Any, threading.Event], str]) -> Iterator[Any]:
    """Run ``job(preview, stop)`` (a :meth:`UiSession.run` call) in a thread and yield the page's updates: a live
    preview each time the run reports one (and an empty update every :data:`HEARTBEAT_S` without one), then
    (preview, result, download, gallery). Errors become one message.

    When the page goes away, Gradio stops iterating this generator at its next update and closes it; ``stop`` is
    then set, so the run ends at its next step and the next run can start."""
    updates: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}
    stop = threading.Event()

    def work() -> None:
        try:
            outcome["path"] = job(lambda latents: updates.put(session.preview_image(model, latents)), stop)
        except BaseException as exc:  # shown in the page below
            outcome["error"] = exc
        finally:
            updates.put(None)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            try:
                picture = updates.get(timeout=HEARTBEAT_S)
            except queue.Empty:  # an update lets Gradio notice a page that went away
                yield gr.update(), gr.update(), gr.update(), gr.update()
                continue
            if picture is None:
                break
            yield picture, gr.update(), gr.update(), gr.update()
    finally:
        if "path" not in outcome and "error" not in outcome:  # closed before the run ended
            stop.set()
    failure = outcome.get("error")
    if failure is not None:
        if isinstance(failure, (Cancelled, InvalidInputError, ValueError, RuntimeError)):
            raise error(failure) from None
        raise failure
    yield gr.update(), outcome["path"], outcome["path"], session.images
