"""The Regions tab: regions painted in brush colours, a prompt (and optional negative prompt and guidance) per
colour, a background prompt; the segmentation previewed, and the layout imported from or exported to the CLI's
format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.editor import blank, blank_canvas, paint_layer, painting
from multidiffusion.interfaces.ui.session import PAINT_COLOURS, layout_to_paint, layout_to_zip, painted_masks
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
            layout = _layout_files()
        with gr.Column():
            preview = live_preview("r-")
            segmentation = gr.Image(label="segmentation (who paints each pixel)", elem_id="r-seg")
            outputs = RunOutputs(preview, *result_and_download("r-"))
    return RegionsTab(paint, colours, background, sampling, run, segment, layout, segmentation, outputs)


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
