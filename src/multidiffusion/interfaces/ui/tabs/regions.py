"""The Regions tab: regions painted in brush colours, a prompt (and optional negative prompt and guidance) per
colour, a background prompt; the segmentation previewed, and the layout imported from or exported to the CLI's
format."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.editor import blank, blank_canvas, paint_layer, painting, painting_or_blank
from multidiffusion.interfaces.ui.session import (
    MAX_LIVE_TABS,
    PAINT_COLOURS,
    layout_to_paint,
    layout_to_zip,
    painted_masks,
)
from multidiffusion.interfaces.ui.widgets import (
    Page,
    RunButtons,
    RunOutputs,
    Sampling,
    bind,
    denoising,
    error,
    guidance_value,
    live_preview,
    result_and_download,
    run_buttons,
    sampling_fields,
    seed_generator,
    streamed,
    unchanged,
    uploaded_path,
    wire_run,
)

LIVE_LABEL = (
    "Live: the preview follows the painting, a frame every model call (few-step models and the toy model; with "
    "S steps an edit shows after S calls)"
)
MAX_LIVE_FRAMES = 100_000  # per turn of the toggle: then Live stops, and is turned on again to go on
LIVE_SHOW_EVERY_S = 0.1  # the page gets the newest frame at most this often; the others are drawn, not sent
COLOURS_NOTE = (
    "The brush colours only label the regions: each colour is a slot with its own prompt below, and the image "
    'follows that prompt, not the colour (the red slot may hold "a blue box"). An imported layout paints each '
    "region in the colour its name or prompt names, where it can."
)


@dataclass(frozen=True)
class ColourFields:
    """One field per brush colour, in the order of PAINT_COLOURS."""

    prompts: list[gr.Textbox]
    negatives: list[gr.Textbox]
    scales: list[gr.Number]


@dataclass(frozen=True)
class LayoutFiles:
    """A layout file to import, the export button and the exported file."""

    upload: gr.File
    export: gr.Button
    exported: gr.File


@dataclass(frozen=True)
class LiveFields:
    """The Live toggle, its pause and the line that says how it goes."""

    on: gr.Checkbox
    pause: gr.Checkbox
    status: gr.Markdown
    key: gr.State  # this browser tab's own key: its live canvas in the session


@dataclass(frozen=True)
class RegionsTab:
    """The tab's components that its events use."""

    paint: gr.ImageEditor
    colours: ColourFields
    background: gr.Textbox
    sampling: Sampling
    run: RunButtons
    segment: gr.Button
    layout: LayoutFiles
    segmentation: gr.Image
    outputs: RunOutputs
    live: LiveFields


def build() -> RegionsTab:
    """The tab: the canvas and its prompts beside the segmentation and the run's preview, result and download."""
    with gr.Tab("Regions", elem_id="tab-regions"), gr.Row():
        with gr.Column():
            paint = _canvas()
            gr.Markdown(COLOURS_NOTE, elem_id="regions-colours")
            colours = _colour_fields()
            background = gr.Textbox(label="background prompt", elem_id="background")
            with gr.Row():
                sampling = sampling_fields("r-")
            with gr.Row():
                run = run_buttons("r-", "Generate regions")
                segment = gr.Button("Preview the segmentation", elem_id="r-segmentation")
            live = _live_fields()
            layout = _layout_files()
        with gr.Column():
            preview = live_preview("r-")
            segmentation = gr.Image(label="segmentation (who paints each pixel)", elem_id="r-seg")
            outputs = RunOutputs(preview, *result_and_download("r-"))
    return RegionsTab(paint, colours, background, sampling, run, segment, layout, segmentation, outputs, live)


def _live_fields() -> LiveFields:
    with gr.Row():
        on = gr.Checkbox(label=LIVE_LABEL, elem_id="live")
        pause = gr.Checkbox(label="pause Live", elem_id="live-pause")
    status = gr.Markdown("", elem_id="live-status")
    return LiveFields(on, pause, status, gr.State(lambda: secrets.token_hex(16)))


def _canvas() -> gr.ImageEditor:
    """A white 512 × 256 canvas and a brush of the paint colours.

    The canvas takes the size of the background it is given (not ``fixed_canvas``): the canvas size is the image
    size, and a fixed canvas would scale an imported layout's background to fit but lay its paint layer unscaled in
    the middle, so the masks would show at two scales. It is created at 1 × 1 because the editor centres a new
    layer on the canvas it was created with as well as on its background (:func:`~.editor.paint_layer`); the value
    then sizes it. PNG, not Gradio's lossy WebP, carries the layers both ways, so a mask keeps its exact colours and
    edges."""
    brush = gr.Brush(colors=[f"rgb{c}" for _, c in PAINT_COLOURS], color_mode="fixed")
    return gr.ImageEditor(
        value=blank(256, 512),
        brush=brush,
        canvas_size=(1, 1),
        fixed_canvas=False,
        format="png",
        buttons=["download"],
        type="numpy",
        label="paint regions (one colour per prompt)",
        elem_id="paint",
    )


def _colour_fields() -> ColourFields:
    """A prompt per colour; their negative prompts and guidance in a closed accordion."""
    prompts = [gr.Textbox(label=f"{name} region prompt", elem_id=f"prompt-{name}") for name, _ in PAINT_COLOURS]
    with gr.Accordion("negative prompt and guidance per colour", open=False):
        negatives = [
            gr.Textbox(label=f"{name} negative prompt", elem_id=f"negative-{name}") for name, _ in PAINT_COLOURS
        ]
        scales = [
            gr.Number(0, label=f"{name} guidance (0: the run's)", elem_id=f"guidance-{name}")
            for name, _ in PAINT_COLOURS
        ]
    return ColourFields(prompts, negatives, scales)


def _layout_files() -> LayoutFiles:
    with gr.Row():
        upload = gr.File(
            label="import a layout (layout.json, or a zip with its masks)",
            file_types=[".json", ".zip"],
            elem_id="r-import",
        )
        export = gr.Button("Export the layout", elem_id="r-export-button")
        exported = gr.File(label="layout (zip: layout.json and masks)", elem_id="r-export")
    return LayoutFiles(upload, export, exported)


def wire(tab: RegionsTab, page: Page) -> None:
    """The tab's events: Generate / Cancel, the segmentation previewed, the layout exported and imported."""
    colours, sampling = tab.colours, tab.sampling
    inputs = [tab.paint, tab.background, sampling.steps, sampling.guidance, sampling.seed, *colours.prompts]
    inputs += [*colours.negatives, *colours.scales]
    wire_run(page, tab.run, bind(regions, page.session), inputs, tab.outputs)
    layout = [tab.paint, tab.background, *colours.prompts]
    tab.segment.click(segmentation, layout, tab.segmentation)
    tab.layout.export.click(bind(export_layout, page.session), layout, tab.layout.exported)
    # An import reaches the canvas in three updates: Gradio's editor lays a new layer centred on the union of what
    # it holds, unscaled, so it is cleared, then sized by a blank background, then given the layer (editor.py). A
    # refused upload stops the chain and leaves the canvas as it was.
    # No progress shown: it would cover the canvas, and after a refusal, the message would stay over it.
    imported, quiet = gr.State(None), {"show_progress": "hidden"}
    imports = tab.layout.upload.upload(import_layout, tab.layout.upload, [*layout, imported], **quiet)
    imports.success(size_imported, imported, tab.paint, **quiet).success(paint_imported, imported, tab.paint, **quiet)
    _wire_live(tab, page)


def _wire_live(tab: RegionsTab, page: Page) -> None:
    """Live: the toggle starts this browser tab's stream of frames into the preview (and stops it); every edit of the
    canvas, the prompts or the background goes to it at once, drawn by the next frame that starts; pause holds it."""
    colours, sampling = tab.colours, tab.sampling
    scene = [tab.paint, tab.background, sampling.steps, sampling.seed, *colours.prompts, *colours.negatives]
    scene += colours.scales
    key = tab.live.key
    tab.live.on.change(
        bind(live_frames, page.session),
        [key, page.model, tab.live.on, *scene],
        [tab.outputs.preview, tab.live.status],
        concurrency_id="live",
        concurrency_limit=MAX_LIVE_TABS,
        show_progress="hidden",
    )
    edit = {"fn": bind(live_edit, page.session), "inputs": [key, page.model, *scene], "outputs": None}
    for field in [tab.paint, tab.background, *colours.prompts, *colours.negatives, *colours.scales]:
        field.change(**edit, queue=False, show_progress="hidden")
    tab.live.pause.change(bind(live_pause, page.session), [key, tab.live.pause], None, queue=False)


# The event handlers below have comments, not docstrings: Gradio would show a docstring in the page's API docs.


def regions(session, model, paint, background, steps, guidance, seed, *per_colour, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)  # fmt: skip
    # Generate regions: the painted colours that have a prompt, their previews streamed to the page, then the result
    try:
        layer = painting(paint)
        pipe, regs = _painted_regions(session, model, layer, per_colour)
    except (InvalidInputError, ValueError, RuntimeError) as exc:
        raise error(exc) from None
    height, width = layer.shape[:2]

    def job(preview, stop):
        return session.run(
            pipe.regions,
            denoising(progress),
            preview,
            stop,
            regions=regs,
            background=background or None,
            height=height,
            width=width,
            num_inference_steps=int(steps),
            guidance_scale=guidance_value(guidance),
            generator=seed_generator(seed),
        )

    yield from streamed(session, model, job)


def live_frames(session, tab, model, on, paint, background, steps, seed, *per_colour):
    # Live on: this tab's frames into the preview until Live is turned off, the tab closes or the frame cap is reached
    import time

    if not on:
        session.stop_live(tab)
        return
    try:
        canvas = session.start_live(tab, model, _live_scene(session, model, paint, background, steps, seed, per_colour))
    except (InvalidInputError, ValueError, RuntimeError) as exc:
        raise error(exc) from None
    shown, start, last = 0.0, time.perf_counter(), None
    try:
        for frame in canvas.frames(count=MAX_LIVE_FRAMES, idle_s=1.0):
            if frame is None:  # paused or slow: an update lets Gradio notice a tab that went away
                yield gr.update(), gr.update()
                continue
            now = time.perf_counter()
            if now - shown >= LIVE_SHOW_EVERY_S:
                shown = now
                rate = (frame.index + 1) / max(now - start, 1e-9)
                status = f"live: frame {frame.index + 1} ({rate:.1f} frames/s), scene version {frame.version}"
                pixels = np.asarray(frame.image)
                # an unchanged picture is not sent again: Gradio would rewrite its file while the page reads it
                same = last is not None and np.array_equal(pixels, last)
                last = pixels
                yield (gr.update() if same else frame.image), status
        yield gr.update(), f"Live stopped after {MAX_LIVE_FRAMES} frames: turn it off and on to go on"
    except (InvalidInputError, ValueError, RuntimeError) as exc:
        raise error(exc) from None
    finally:
        session.stop_live(tab, canvas)


def live_edit(session, tab, model, paint, background, steps, seed, *per_colour):
    # an edit while Live is on: the next frame that starts draws it
    canvas = session.live(tab)
    if canvas is None:
        return
    try:
        scene = _live_scene(session, model, paint, background, steps, seed, per_colour)
        canvas.update(**{f.name: getattr(scene, f.name) for f in dataclasses.fields(scene)})
    except (InvalidInputError, ValueError, RuntimeError) as exc:
        raise error(exc) from None


def live_pause(session, tab, paused):
    # hold this tab's Live (frames in flight finish), or go on
    canvas = session.live(tab)
    if canvas is not None:
        canvas.pause() if paused else canvas.resume()


def _live_scene(session: Any, model: str, paint: Any, background: str, steps: Any, seed: Any, per_colour: Any) -> Any:
    """The live scene of the form: the painted colours that have a prompt (none yet is allowed: the background
    alone), the background, the steps and the seed (−1: 0, so that the picture holds still)."""
    from multidiffusion.pipeline.modes.live import LiveScene

    layer = painting_or_blank(paint)
    try:
        _, regs = _painted_regions(session, model, layer, per_colour)
    except InvalidInputError:
        if not background:
            message = "give a background prompt, or paint a region and give its colour a prompt"
            raise InvalidInputError(message) from None
        regs = []
    height, width = layer.shape[:2]
    value = int(seed) if seed is not None and int(seed) >= 0 else 0
    return LiveScene(tuple(regs), background or None, height, width, seed=value, num_inference_steps=int(steps))


def _painted_regions(session: Any, model: str, layer: np.ndarray, per_colour: tuple[Any, ...]) -> tuple[Any, list]:
    """(the pipeline of ``model``, a Region per painted colour that has a prompt) from the painted ``layer`` and
    ``per_colour``: the colours' prompts, then their negative prompts, then their guidance scales."""
    from multidiffusion.core.features.regions import Region

    n = len(PAINT_COLOURS)
    prompts, negatives, scales = per_colour[:n], per_colour[n : 2 * n], per_colour[2 * n :]
    masks = painted_masks(layer)
    chosen = [(i, name) for i, (name, _) in enumerate(PAINT_COLOURS) if name in masks and prompts[i]]
    if not chosen:
        raise InvalidInputError("paint at least one region and give its colour a prompt")
    height, width = layer.shape[:2]
    pipe = session.pipeline(model)
    g = pipe.model.granularity_px
    if height % g or width % g:
        raise InvalidInputError(f"the canvas must be a multiple of {g} px each way, got {width}×{height}")
    regs = [
        Region(
            prompts[i],
            mask=masks[name].astype(np.float32),
            name=name,
            negative_prompt=negatives[i] or None,
            guidance_scale=guidance_value(scales[i]),
        )
        for i, name in chosen
    ]
    return pipe, regs


def segmentation(paint, background, *prompts):
    # what each pixel will follow: the painted regions' legend
    from multidiffusion.core.features.regions import Region
    from multidiffusion.interfaces.files.segmentation import segmentation_image
    from multidiffusion.pipeline.inputs.region_file import Background

    try:
        masks = painted_masks(painting(paint))
        regs = [
            Region(prompts[i] or name, mask=masks[name].astype(np.float32), name=name)
            for i, (name, _) in enumerate(PAINT_COLOURS)
            if name in masks
        ]
        if not regs:
            raise InvalidInputError("paint at least one region first")
        height, width = next(iter(masks.values())).shape
        image, _ = segmentation_image(regs, Background(background) if background else None, height, width)
    except InvalidInputError as exc:
        raise error(exc) from None
    return image


def export_layout(session, paint, background, *prompts):
    # the painted regions as a zip the CLI reads: layout.json and a mask per colour
    try:
        masks = painted_masks(painting(paint))
        names = {name: prompts[i] for i, (name, _) in enumerate(PAINT_COLOURS)}
        count = len(list(session.out_dir.glob("layout-*.zip")))
        return str(layout_to_zip(masks, names, background, session.out_dir / f"layout-{count + 1:03d}.zip"))
    except InvalidInputError as exc:
        raise error(exc) from None


def import_layout(file):
    # a layout the CLI reads: its prompts fill the form, the canvas is cleared, and its paint is kept for the next two
    if file is None:
        return [*unchanged(2 + len(PAINT_COLOURS)), None]
    try:
        layer, named, background = layout_to_paint(uploaded_path(file))
    except InvalidInputError as exc:
        raise error(exc) from None
    return [None, background, *(named.get(name, "") for name, _ in PAINT_COLOURS), layer]


def size_imported(layer):
    # the cleared canvas sized to the imported layout: a blank background of its size
    return gr.update() if layer is None else blank_canvas(*layer.shape[:2])


def paint_imported(layer):
    # the imported layout's paint, as the one layer of the canvas just sized
    return gr.update() if layer is None else paint_layer(layer)
