"""``multidiffusion ui``: a Gradio page for panoramas and painted regions (extra ``[ui]``; docs/ui.md).

Gradio is the web framework; this module only lays out the form and hands each run to
:class:`~multidiffusion.interfaces.ui.session.UiSession`, which does the work one run at a time. Errors show as a
message in the page (``gr.Error``), never a traceback. Bound to 127.0.0.1 unless ``--host`` says otherwise; no
public share link unless ``--share``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.session import (
    PAINT_COLOURS,
    TOY,
    Cancelled,
    UiSession,
    layout_to_paint,
    layout_to_zip,
    outline_views,
    painted_masks,
)

SIZE_PRESETS = {  # (height, width, 360° wrap)
    "2:1 (512 × 1024)": (512, 1024, False),
    "4:1 (512 × 2048)": (512, 2048, False),
    "360° (512 × 4096)": (512, 4096, True),
}
MAX_UPLOAD = "20mb"


def _error(exc: BaseException) -> Exception:
    import gradio as gr

    return gr.Error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, print_exception=False)


def _guidance(value: float | None) -> float | None:
    """The form's guidance: 0 or empty means the model's own default."""
    return None if not value else float(value)


def _seed(value: float | None) -> Any:
    import torch

    if value is None or int(value) < 0:
        return None  # the pipeline draws one and records it
    return torch.Generator().manual_seed(int(value))


def build_app(session: UiSession) -> Any:
    """The Gradio Blocks app of ``session`` (not launched)."""
    import gradio as gr

    from multidiffusion.adapters import SCHEDULER_NAMES
    from multidiffusion.core import LAYOUT_NAMES, WEIGHT_KINDS

    def panorama(model, prompt, negative, height, width, steps, scheduler, guidance, seed, weights, sync, circular,
                 batch, layout, sync_weight, global_view, progress=gr.Progress()):  # noqa: B008 (Gradio's progress idiom)  # fmt: skip
        def job(preview):
            pipe = session.pipeline(model)
            return session.run(
                pipe.__call__,
                lambda i, n: progress((i, n), desc="denoising"),
                preview,
                prompt=prompt,
                negative_prompt=negative or None,
                height=int(height),
                width=int(width),
                num_inference_steps=int(steps),
                scheduler=scheduler or None,
                guidance_scale=_guidance(guidance),
                generator=_seed(seed),
                **({"layout": layout} if layout else {"weights": weights or None}),
                sync=bool(sync),
                **({"sync_weight": float(sync_weight)} if sync else {}),
                circular=bool(circular),
                view_batch_size=int(batch) if batch else None,
                global_view=float(global_view) if global_view else None,
            )

        yield from _streamed(session, model, job)

    def regions(model, paint, background, steps, guidance, seed, *per_colour, progress=gr.Progress()):  # noqa: B008  # fmt: skip
        n = len(PAINT_COLOURS)
        prompts, negatives, scales = per_colour[:n], per_colour[n : 2 * n], per_colour[2 * n :]
        from multidiffusion.core.features.regions import Region

        try:
            layer = _painting(paint)
            masks = painted_masks(layer)
            chosen = [(name, prompts[i]) for i, (name, _) in enumerate(PAINT_COLOURS) if name in masks and prompts[i]]
            if not chosen:
                raise InvalidInputError("paint at least one region and give its colour a prompt")
            height, width = layer.shape[:2]
            pipe = session.pipeline(model)
            g = pipe.model.granularity_px
            if height % g or width % g:
                raise InvalidInputError(f"the canvas must be a multiple of {g} px each way, got {width}×{height}")
            index = {name: i for i, (name, _) in enumerate(PAINT_COLOURS)}
            regs = [
                Region(
                    text,
                    mask=masks[name].astype(np.float32),
                    name=name,
                    negative_prompt=negatives[index[name]] or None,
                    guidance_scale=_guidance(scales[index[name]]),
                )
                for name, text in chosen
            ]
        except (InvalidInputError, ValueError, RuntimeError) as exc:
            raise _error(exc) from None

        def job(preview):
            return session.run(
                pipe.regions,
                lambda i, n: progress((i, n), desc="denoising"),
                preview,
                regions=regs,
                background=background or None,
                height=height,
                width=width,
                num_inference_steps=int(steps),
                guidance_scale=_guidance(guidance),
                generator=_seed(seed),
            )

        yield from _streamed(session, model, job)

    def image_run(model, mode, edited, prompt, steps, seed, scale, strength, left, right, top, bottom,
                  progress=gr.Progress()):  # noqa: B008  # fmt: skip
        try:
            picture, mask = _picture_and_mask(edited)
            common = dict(num_inference_steps=int(steps), generator=_seed(seed))
            if mode == "upscale":
                call, kwargs = "upscale", dict(image=picture, scale=float(scale), prompt=prompt or "",
                                                strength=float(strength))  # fmt: skip
            elif mode == "outpaint":
                margins = dict(left=int(left), right=int(right), top=int(top), bottom=int(bottom))
                call, kwargs = "outpaint", dict(image=picture, prompt=prompt or "", **margins)
            else:
                if mask is None:
                    raise InvalidInputError("paint the part to redraw on the picture (any brush colour)")
                call, kwargs = "inpaint", dict(image=picture, mask=mask, prompt=prompt or "", strength=float(strength))
        except (InvalidInputError, ValueError) as exc:
            raise _error(exc) from None

        def job(preview):
            pipe = session.pipeline(model)
            return session.run(
                getattr(pipe, call), lambda i, n: progress((i, n), desc="denoising"), preview, **kwargs, **common
            )

        yield from _streamed(session, model, job)

    def last_seed():  # the seed the last image recorded (a random one included), for the next run
        from multidiffusion.pipeline.settings.reproduce import read_recipe

        if not session.images:
            raise _error(InvalidInputError("no image yet: make one first"))
        return read_recipe(session.images[-1]).get("seed")

    def show_views(path):  # the result with its views outlined
        if not path:
            raise _error(InvalidInputError("make an image first"))
        try:
            return outline_views(path)
        except InvalidInputError as exc:
            raise _error(exc) from None

    def segmentation(paint, background, *prompts):  # what each pixel will follow: the painted regions' legend
        from multidiffusion.core.features.regions import Region
        from multidiffusion.interfaces.files.segmentation import segmentation_image
        from multidiffusion.pipeline.inputs.region_file import Background

        try:
            masks = painted_masks(_painting(paint))
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
            raise _error(exc) from None
        return image

    def export_layout(paint, background, *prompts):
        try:
            masks = painted_masks(_painting(paint))
            names = {name: prompts[i] for i, (name, _) in enumerate(PAINT_COLOURS)}
            count = len(list(session.out_dir.glob("layout-*.zip")))
            return str(layout_to_zip(masks, names, background, session.out_dir / f"layout-{count + 1:03d}.zip"))
        except InvalidInputError as exc:
            raise _error(exc) from None

    def import_layout(file):
        if file is None:
            return [gr.update()] * (2 + len(PAINT_COLOURS))
        try:
            layer, named, background = layout_to_paint(file if isinstance(file, str) else file.name)
        except InvalidInputError as exc:
            raise _error(exc) from None
        height, width = layer.shape[:2]
        white = _blank(height, width)
        editor = {"background": white, "layers": [layer], "composite": _over(white, layer)}
        return [editor, background, *(named.get(name, "") for name, _ in PAINT_COLOURS)]

    def fill_from_png(file):  # a PNG made here: its recipe fills the panorama form
        from multidiffusion.pipeline.settings.reproduce import read_recipe

        if file is None:
            return [gr.update()] * 14
        try:
            r = read_recipe(file if isinstance(file, str) else file.name)
        except InvalidInputError as exc:
            raise _error(exc) from None
        prompt = r.get("prompt", [""])
        negative = r.get("negative_prompt", [""])
        return (
            prompt[0] if isinstance(prompt, list) else prompt,
            negative[0] if isinstance(negative, list) else negative,
            r.get("height"),
            r.get("width"),
            r.get("num_inference_steps"),
            r.get("scheduler"),
            r.get("guidance_scale"),
            r.get("seed"),
            r.get("weights") or "",
            bool(r.get("sync", False)),
            bool(r.get("circular", False)),
            gr.update(),  # the view batch changes rounding only
            r.get("layout") or "",
            r.get("sync_weight", 20),
            r.get("global_view") or 0,
        )

    with gr.Blocks(title="multidiffusion") as app:
        gr.Markdown("# multidiffusion\nPanoramas and painted regions from a diffusion model (docs/ui.md).")
        model = gr.Dropdown(session.choices(), value=session.default_model, label="model", elem_id="model")
        with gr.Tab("Panorama", elem_id="tab-panorama"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="prompt", elem_id="prompt")
                    negative = gr.Textbox(label="negative prompt", elem_id="negative")
                    preset = gr.Radio(list(SIZE_PRESETS), label="size preset", elem_id="preset")
                    with gr.Row():
                        height = gr.Number(512, label="height (px)", precision=0, elem_id="height")
                        width = gr.Number(2048, label="width (px)", precision=0, elem_id="width")
                    with gr.Row():
                        steps = gr.Number(30, label="steps", precision=0, elem_id="steps")
                        scheduler = gr.Dropdown(["", *SCHEDULER_NAMES], value="", label="scheduler", elem_id="sched")
                        guidance = gr.Number(0, label="guidance (0: the model's)", elem_id="guidance")
                        seed = gr.Number(-1, label="seed (-1: random)", precision=0, elem_id="seed")
                    with gr.Row():
                        weights = gr.Dropdown(
                            ["", *WEIGHT_KINDS],
                            value="",
                            label="weights (blank: gaussian, or uniform with sync)",
                            elem_id="weights",
                        )
                        sync = gr.Checkbox(label="SyncDiffusion", elem_id="sync")
                        circular = gr.Checkbox(label="360° (circular)", elem_id="circular")
                        batch = gr.Number(0, label="views per model call (0: automatic)", precision=0, elem_id="batch")
                    with gr.Row():
                        layout = gr.Dropdown(
                            ["", *LAYOUT_NAMES],
                            value="",
                            label="cheaper layout (sets stride and weights)",
                            elem_id="layout",
                        )
                        sync_weight = gr.Number(20, label="sync weight (the paper's 20)", elem_id="sync-weight")
                        global_view = gr.Number(
                            0, label="global view weight (0: off; 4 is a good start)", elem_id="global-view"
                        )
                    with gr.Row():
                        go = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop = gr.Button("Cancel", elem_id="cancel")
                        views = gr.Button("Outline the views", elem_id="views")
                        reuse = gr.Button("Reuse the last seed", elem_id="reuse-seed")
                    drop = gr.File(label="drop a PNG made here to fill the form", file_types=[".png"], elem_id="drop")
                with gr.Column():
                    preview = gr.Image(label="live preview (x̂₀, every 2 steps)", elem_id="preview")
                    image = gr.Image(label="result", type="filepath", elem_id="result")
                    download = gr.File(label="download (PNG with its recipe)", elem_id="download")
        with gr.Tab("Regions", elem_id="tab-regions"):
            with gr.Row():
                with gr.Column():
                    brush = gr.Brush(colors=[f"rgb{c}" for _, c in PAINT_COLOURS], color_mode="fixed")
                    paint = gr.ImageEditor(
                        value=_blank(256, 512),
                        brush=brush,
                        canvas_size=(512, 256),
                        fixed_canvas=True,
                        type="numpy",
                        label="paint regions (one colour per prompt)",
                        elem_id="paint",
                    )
                    colour_prompts = [
                        gr.Textbox(label=f"{name} region prompt", elem_id=f"prompt-{name}") for name, _ in PAINT_COLOURS
                    ]
                    with gr.Accordion("negative prompt and guidance per colour", open=False):
                        colour_negatives = [
                            gr.Textbox(label=f"{name} negative prompt", elem_id=f"negative-{name}")
                            for name, _ in PAINT_COLOURS
                        ]
                        colour_scales = [
                            gr.Number(0, label=f"{name} guidance (0: the run's)", elem_id=f"guidance-{name}")
                            for name, _ in PAINT_COLOURS
                        ]
                    background = gr.Textbox(label="background prompt", elem_id="background")
                    with gr.Row():
                        r_steps = gr.Number(30, label="steps", precision=0, elem_id="r-steps")
                        r_guidance = gr.Number(0, label="guidance (0: the model's)", elem_id="r-guidance")
                        r_seed = gr.Number(-1, label="seed", precision=0, elem_id="r-seed")
                    with gr.Row():
                        r_go = gr.Button("Generate regions", variant="primary", elem_id="r-generate")
                        r_stop = gr.Button("Cancel", elem_id="r-cancel")
                        r_seg = gr.Button("Preview the segmentation", elem_id="r-segmentation")
                    with gr.Row():
                        r_import = gr.File(
                            label="import a layout (layout.json, or a zip with its masks)",
                            file_types=[".json", ".zip"],
                            elem_id="r-import",
                        )
                        r_export_button = gr.Button("Export the layout", elem_id="r-export-button")
                        r_export = gr.File(label="layout (zip: layout.json and masks)", elem_id="r-export")
                with gr.Column():
                    r_preview = gr.Image(label="live preview (x̂₀, every 2 steps)", elem_id="r-preview")
                    r_segmentation = gr.Image(label="segmentation (who paints each pixel)", elem_id="r-seg")
                    r_image = gr.Image(label="result", type="filepath", elem_id="r-result")
                    r_download = gr.File(label="download", elem_id="r-download")
        with gr.Tab("Image", elem_id="tab-image"):
            with gr.Row():
                with gr.Column():
                    mode = gr.Radio(["upscale", "outpaint", "inpaint"], value="upscale", label="mode", elem_id="i-mode")
                    edited = gr.ImageEditor(
                        brush=gr.Brush(colors=["rgb(255, 255, 255)"], color_mode="fixed"),
                        type="numpy",
                        label="picture (inpaint: paint the part to redraw)",
                        elem_id="i-image",
                    )
                    i_prompt = gr.Textbox(label="prompt", elem_id="i-prompt")
                    with gr.Row():
                        i_steps = gr.Number(30, label="steps", precision=0, elem_id="i-steps")
                        i_seed = gr.Number(-1, label="seed", precision=0, elem_id="i-seed")
                        i_scale = gr.Number(2, label="upscale factor", elem_id="i-scale")
                        i_strength = gr.Slider(0, 1, value=0.5, label="strength", elem_id="i-strength")
                    with gr.Row():
                        margins = [
                            gr.Number(0, label=f"outpaint {side} (px)", precision=0, elem_id=f"i-{side}")
                            for side in ("left", "right", "top", "bottom")
                        ]
                    with gr.Row():
                        i_go = gr.Button("Generate", variant="primary", elem_id="i-generate")
                        i_stop = gr.Button("Cancel", elem_id="i-cancel")
                with gr.Column():
                    i_preview = gr.Image(label="live preview (x̂₀, every 2 steps)", elem_id="i-preview")
                    i_image = gr.Image(label="result", type="filepath", elem_id="i-result")
                    i_download = gr.File(label="download", elem_id="i-download")
        gallery = gr.Gallery(label="this session", columns=6, height=220, elem_id="gallery")

        preset.change(lambda p: SIZE_PRESETS[p] if p else (gr.update(),) * 3, preset, [height, width, circular])
        fields = [prompt, negative, height, width, steps, scheduler, guidance, seed, weights, sync, circular, batch]
        fields += [layout, sync_weight, global_view]
        run = go.click(panorama, [model, *fields], [preview, image, download, gallery], concurrency_limit=1)
        stop.click(session.cancel, None, None, queue=False)
        r_inputs = [model, paint, background, r_steps, r_guidance, r_seed, *colour_prompts]
        r_inputs += [*colour_negatives, *colour_scales]
        r_run = r_go.click(regions, r_inputs, [r_preview, r_image, r_download, gallery], concurrency_limit=1)
        r_stop.click(session.cancel, None, None, queue=False)
        i_inputs = [model, mode, edited, i_prompt, i_steps, i_seed, i_scale, i_strength, *margins]
        i_go.click(image_run, i_inputs, [i_preview, i_image, i_download, gallery], concurrency_limit=1)
        i_stop.click(session.cancel, None, None, queue=False)
        drop.upload(fill_from_png, drop, fields)
        views.click(show_views, download, image)
        reuse.click(last_seed, None, seed)
        r_seg.click(segmentation, [paint, background, *colour_prompts], r_segmentation)
        r_export_button.click(export_layout, [paint, background, *colour_prompts], r_export)
        r_import.upload(import_layout, r_import, [paint, background, *colour_prompts])
        del run, r_run
    return app


def _streamed(session: UiSession, model: str, job: Any) -> Any:
    """Run ``job(preview)`` (a :meth:`UiSession.run` call) in a thread and yield the page's updates: a live preview
    each time the run reports one, then (preview, result, download, gallery). Errors become one message."""
    import queue
    import threading

    import gradio as gr

    updates: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["path"] = job(lambda latents: updates.put(session.preview_image(model, latents)))
        except BaseException as exc:  # shown in the page by the handler below
            outcome["error"] = exc
        finally:
            updates.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (picture := updates.get()) is not None:
        yield picture, gr.update(), gr.update(), gr.update()
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, (Cancelled, InvalidInputError, ValueError, RuntimeError)):
            raise _error(error) from None
        raise error
    yield gr.update(), outcome["path"], outcome["path"], session.images


def _picture_and_mask(value: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(picture (H, W, 3) uint8, mask (H, W) uint8 white where painted, or None) from the Image tab's editor."""
    if not isinstance(value, dict) or value.get("background") is None:
        raise InvalidInputError("upload a picture first")
    background = np.asarray(value["background"])
    picture = background[..., :3].astype(np.uint8) if background.ndim == 3 else np.repeat(background[..., None], 3, 2)
    mask = None
    layers = value.get("layers") or []
    if layers:
        painted = np.zeros(picture.shape[:2], dtype=bool)
        for layer in layers:
            layer = np.asarray(layer)
            painted |= layer[..., 3] > 0 if layer.shape[2] == 4 else layer.any(axis=2)
        if painted.any():
            mask = np.where(painted, 255, 0).astype(np.uint8)
    return np.ascontiguousarray(picture), mask


def _over(base: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """An RGBA ``layer`` over an RGB ``base`` (painted pixels replace the base)."""
    out = base.copy()
    painted = layer[..., 3] > 0
    out[painted] = layer[painted][:, :3]
    return out


def _blank(height: int, width: int) -> np.ndarray:
    return np.full((height, width, 3), 255, dtype=np.uint8)


def _painting(value: Any) -> np.ndarray:
    """The painted layers of an ImageEditor value, merged: (H, W, 4) uint8 (transparent where nothing is painted)."""
    layers = value.get("layers") if isinstance(value, dict) else None
    if not layers:
        raise InvalidInputError("paint at least one region on the canvas")
    merged = np.zeros((*np.asarray(layers[0]).shape[:2], 4), dtype=np.uint8)
    for layer in layers:
        layer = np.asarray(layer)
        if layer.shape[2] == 3:
            layer = np.concatenate([layer, np.full((*layer.shape[:2], 1), 255, dtype=np.uint8)], axis=2)
        painted = layer[..., 3] > 0
        merged[painted] = layer[painted]
    return merged


def add_ui(sub: Any) -> None:
    """The ``ui`` subcommand's parser."""
    u = sub.add_parser(
        "ui",
        help="a web page for panoramas and painted regions (needs the ui extra: pip install 'multidiffusion[ui]')",
        description="Serve a Gradio page on 127.0.0.1 (docs/ui.md): panoramas, regions painted in colours, cancel, "
        "the session's images. --model toy needs no weights.",
    )
    u.add_argument("--model", default=TOY, help="the model selected at start (default: toy, which needs no weights)")
    u.add_argument("--models-dir", default=None, metavar="DIR", help="diffusers model folders to offer in the picker")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    u.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    u.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")


def run_ui(args: argparse.Namespace) -> int:
    """``multidiffusion ui``: build the app and serve it until interrupted."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InvalidInputError("the web UI needs Gradio: pip install 'multidiffusion[ui]'") from None
    if not 0 < args.port < 65536:
        raise InvalidInputError(f"--port must be in 1…65535, got {args.port}")
    session = UiSession(default_model=args.model, models_dir=args.models_dir, device=args.device)
    app = build_app(session)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[str(session.out_dir)],
    )
    return 0
