"""The Panorama tab: a prompt over a wide canvas with its size, sampling and view options; the result's views
outlined, the last seed reused, and a PNG made here dropped back to fill the form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.interfaces.ui.session import outline_views
from multidiffusion.interfaces.ui.viewer import show_js, viewer, viewer_copy
from multidiffusion.interfaces.ui.widgets import (
    Page,
    RunButtons,
    RunOutputs,
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
from multidiffusion.pipeline.settings.views import ViewSettings

SIZE_PRESETS = {  # (height, width, 360° wrap)
    "2:1 (512 × 1024)": (512, 1024, False),
    "4:1 (512 × 2048)": (512, 2048, False),
    "360° (512 × 4096)": (512, 4096, True),
}
SPHERE_VIEW = "sphere-view"  # the element the 360° viewer draws in
# the form's fields: the inputs of panorama() after the model, in order, and what a dropped PNG's recipe fills
FIELDS = ("prompt", "negative", "height", "width", "steps", "scheduler", "guidance", "seed")
FIELDS += ("weights", "sync", "circular", "batch", "layout", "sync_weight", "global_view", "sphere")


@dataclass(frozen=True)
class PanoramaTab:
    """The tab's components that its events use."""

    fields: dict[str, Any]  # by the names in FIELDS
    preset: gr.Radio
    run: RunButtons
    views: gr.Button
    reuse: gr.Button
    drop: gr.File
    outputs: RunOutputs
    look: gr.Button
    sphere_copy: gr.Image  # the viewer's copy of the result (hidden)

    def form(self) -> list[Any]:
        """The fields in the order of :data:`FIELDS`."""
        return [self.fields[name] for name in FIELDS]


def build() -> PanoramaTab:
    """The tab: the form beside the run's preview, result and download."""
    from multidiffusion.adapters import SCHEDULER_NAMES

    with gr.Tab("Panorama", elem_id="tab-panorama"), gr.Row():
        with gr.Column():
            prompt = gr.Textbox(label="prompt", elem_id="prompt")
            negative = gr.Textbox(label="negative prompt", elem_id="negative")
            preset = gr.Radio(list(SIZE_PRESETS), label="size preset", elem_id="preset")
            with gr.Row():
                height = gr.Number(512, label="height (px)", precision=0, elem_id="height")
                width = gr.Number(2048, label="width (px)", precision=0, elem_id="width")
            with gr.Row():
                sampling = sampling_fields("", schedulers=SCHEDULER_NAMES, seed_label="seed (-1: random)")
            views_fields = _view_fields()
            with gr.Row():
                run = run_buttons("")
                views = gr.Button("Outline the views", elem_id="views")
                reuse = gr.Button("Reuse the last seed", elem_id="reuse-seed")
            drop = gr.File(label="drop a PNG made here to fill the form", file_types=[".png"], elem_id="drop")
        with gr.Column():
            outputs = RunOutputs(live_preview(""), *result_and_download("", "download (PNG with its recipe)"))
            look = gr.Button("Look around (360°): a result made with the 360° option, or a sphere", elem_id="look")
            viewer(SPHERE_VIEW)
            sphere_copy = gr.Image(type="filepath", visible=False, elem_id="sphere-copy")
    fields = {
        "prompt": prompt,
        "negative": negative,
        "height": height,
        "width": width,
        "steps": sampling.steps,
        "scheduler": sampling.scheduler,
        "guidance": sampling.guidance,
        "seed": sampling.seed,
        **views_fields,
    }
    return PanoramaTab(fields, preset, run, views, reuse, drop, outputs, look, sphere_copy)


def _view_fields() -> dict[str, Any]:
    """How the views are weighted, synchronised, wrapped, batched and laid out, and the global view: two rows."""
    from multidiffusion.core import LAYOUT_NAMES, WEIGHT_KINDS

    with gr.Row():
        weights = gr.Dropdown(
            ["", *WEIGHT_KINDS], value="", label="weights (blank: gaussian, or uniform with sync)", elem_id="weights"
        )
        sync = gr.Checkbox(label="SyncDiffusion", elem_id="sync")
        circular = gr.Checkbox(label="360° (circular)", elem_id="circular")
        sphere = gr.Checkbox(label="whole sphere (360° × 180°, twice as wide as high)", elem_id="sphere")
        batch = gr.Number(0, label="views per model call (0: automatic)", precision=0, elem_id="batch")
    with gr.Row():
        layout = gr.Dropdown(
            ["", *LAYOUT_NAMES], value="", label="cheaper layout (sets stride and weights)", elem_id="layout"
        )
        sync_weight = gr.Number(20, label="sync weight (the paper's 20)", elem_id="sync-weight")
        global_view = gr.Number(0, label="global view weight (0: off; 4 is a good start)", elem_id="global-view")
    return {
        "weights": weights,
        "sync": sync,
        "circular": circular,
        "batch": batch,
        "layout": layout,
        "sync_weight": sync_weight,
        "global_view": global_view,
        "sphere": sphere,
    }


def wire(tab: PanoramaTab, page: Page) -> None:
    """The tab's events: a preset sets the size, Generate / Cancel, the views outlined, the last seed, a dropped PNG."""
    size = [tab.fields["height"], tab.fields["width"], tab.fields["circular"]]
    tab.preset.change(lambda p: SIZE_PRESETS[p] if p else (gr.update(),) * 3, tab.preset, size)
    wire_run(page, tab.run, bind(panorama, page.session), tab.form(), tab.outputs)
    tab.drop.upload(fill_from_png, tab.drop, tab.form())
    tab.views.click(show_views, tab.outputs.download, tab.outputs.result)
    tab.reuse.click(bind(last_seed, page.session), None, tab.fields["seed"])
    look = tab.look.click(bind(for_the_viewer, page.session), tab.outputs.result, tab.sphere_copy)
    look.then(None, tab.sphere_copy, None, js=show_js(SPHERE_VIEW))


# The event handlers below have comments, not docstrings: Gradio would show a docstring in the page's API docs.


def panorama(session, model, prompt, negative, height, width, steps, scheduler, guidance, seed, weights, sync,
             circular, batch, layout, sync_weight, global_view, sphere, progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)  # fmt: skip
    # Generate: one panorama of the form (or a whole sphere), its previews streamed to the page, then its result
    if sphere:
        yield from _sphere(
            session, model, prompt, negative, height, steps, scheduler, guidance, seed, weights, batch, progress
        )
        return

    def job(preview, stop):
        pipe = session.pipeline(model)
        return session.run(
            pipe.__call__,
            denoising(progress),
            preview,
            stop,
            prompt=prompt,
            negative_prompt=negative or None,
            height=int(height),
            width=int(width),
            num_inference_steps=int(steps),
            scheduler=scheduler or None,
            guidance_scale=guidance_value(guidance),
            generator=seed_generator(seed),
            views=ViewSettings(
                layout=layout or None, weights=None if layout else weights or None, tile="x" if circular else None
            ),
            sync=SyncSettings(weight=float(sync_weight)) if sync else None,
            view_batch_size=int(batch) if batch else None,
            global_view=float(global_view) if global_view else None,
        )

    yield from streamed(session, model, job)


def _sphere(session, model, prompt, negative, height, steps, scheduler, guidance, seed, weights, batch, progress):
    # the whole sphere: height × 2·height px, the fov chosen from the height (docs/sphere.md)
    from multidiffusion.pipeline.settings.sphere import SphereSettings

    def job(preview, stop):
        pipe = session.pipeline(model)
        return session.run(
            pipe.sphere,
            denoising(progress),
            preview,
            stop,
            prompt=prompt,
            negative_prompt=negative or None,
            height=int(height),
            num_inference_steps=int(steps),
            scheduler=scheduler or None,
            guidance_scale=guidance_value(guidance),
            generator=seed_generator(seed),
            sphere=SphereSettings(weights=weights) if weights else None,
            view_batch_size=int(batch) if batch else None,
        )

    yield from streamed(session, model, job)


def last_seed(session):
    # the seed the last image recorded (a random one included), for the next run
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    if not session.images:
        raise error(InvalidInputError("no image yet: make one first"))
    return read_recipe(session.images[-1]).get("seed")


def show_views(path):
    # the result with its views outlined
    if not path:
        raise error(InvalidInputError("make an image first"))
    try:
        return outline_views(path)
    except InvalidInputError as exc:
        raise error(exc) from None


def for_the_viewer(session, path):
    # the result enlarged for the 360° viewer, its ends interpolated across the ±180° line
    if not path:
        raise error(InvalidInputError("make an image first"))
    try:
        return viewer_copy(path, session.out_dir / "360")
    except InvalidInputError as exc:
        raise error(exc) from None


def fill_from_png(file):
    # a PNG made here: its recipe fills the form (the view batch is left: it changes rounding only)
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    if file is None:
        return unchanged(len(FIELDS))
    try:
        r = read_recipe(uploaded_path(file))
    except InvalidInputError as exc:
        raise error(exc) from None
    prompt, negative = r.get("prompt", [""]), r.get("negative_prompt", [""])
    values = dict(
        prompt=prompt[0] if isinstance(prompt, list) else prompt,
        negative=negative[0] if isinstance(negative, list) else negative,
        height=r.get("height"),
        width=r.get("width"),
        steps=r.get("num_inference_steps"),
        scheduler=r.get("scheduler"),
        guidance=r.get("guidance_scale"),
        seed=r.get("seed"),
        weights=r.get("weights") or "",
        sync=bool(r.get("sync", False)),
        circular=bool(r.get("circular", False)) or "x" in str(r.get("tile") or ""),
        batch=gr.update(),
        layout=r.get("layout") or "",
        sync_weight=r.get("sync_weight", 20),
        global_view=r.get("global_view") or 0,
        sphere=r.get("mode") == "sphere",
    )
    return tuple(values[name] for name in FIELDS)
