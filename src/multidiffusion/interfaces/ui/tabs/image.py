"""The Image tab: upscale, outpaint or inpaint an uploaded picture, as the commands of the same names do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.editor import picture_and_mask
from multidiffusion.interfaces.ui.widgets import (
    Page,
    RunButtons,
    RunOutputs,
    bind,
    denoising,
    error,
    live_preview,
    result_and_download,
    run_buttons,
    sampling_fields,
    seed_generator,
    streamed,
    wire_run,
)

MODES = ("upscale", "outpaint", "inpaint")
SIDES = ("left", "right", "top", "bottom")  # the outpaint margins


@dataclass(frozen=True)
class ImageTab:
    """The tab's components that its events use."""

    inputs: list[Any]  # those of image_run() after the model
    run: RunButtons
    outputs: RunOutputs


def build() -> ImageTab:
    """The tab: the mode, the picture and the run's options beside its preview, result and download."""
    with gr.Tab("Image", elem_id="tab-image"), gr.Row():
        with gr.Column():
            mode = gr.Radio(list(MODES), value="upscale", label="mode", elem_id="i-mode")
            edited = gr.ImageEditor(
                brush=gr.Brush(colors=["rgb(255, 255, 255)"], color_mode="fixed"),
                type="numpy",
                label="picture (inpaint: paint the part to redraw)",
                elem_id="i-image",
            )
            prompt = gr.Textbox(label="prompt", elem_id="i-prompt")
            with gr.Row():
                sampling = sampling_fields("i-", guidance=False)
                scale = gr.Number(2, label="upscale factor", elem_id="i-scale")
                strength = gr.Slider(0, 1, value=0.5, label="strength", elem_id="i-strength")
            with gr.Row():
                margins = [
                    gr.Number(0, label=f"outpaint {side} (px)", precision=0, elem_id=f"i-{side}") for side in SIDES
                ]
            with gr.Row():
                run = run_buttons("i-")
        with gr.Column():
            outputs = RunOutputs(live_preview("i-"), *result_and_download("i-"))
    inputs = [mode, edited, prompt, sampling.steps, sampling.seed, scale, strength, *margins]
    return ImageTab(inputs, run, outputs)


def wire(tab: ImageTab, page: Page) -> None:
    """The tab's events: Generate / Cancel."""
    wire_run(page, tab.run, bind(image_run, page.session), tab.inputs, tab.outputs)


# The event handler below has comments, not a docstring: Gradio would show a docstring in the page's API docs.


def image_run(session, model, mode, edited, prompt, steps, seed, scale, strength, left, right, top, bottom,
              progress=gr.Progress()):  # noqa: B008 (Gradio's idiom)  # fmt: skip
    # Generate: the picture upscaled, outpainted or inpainted, its previews streamed to the page, then the result
    try:
        picture, mask = picture_and_mask(edited)
        common = dict(num_inference_steps=int(steps), generator=seed_generator(seed))
        call, kwargs = _mode_call(mode, picture, mask, prompt or "", scale, strength, (left, right, top, bottom))
    except (InvalidInputError, ValueError) as exc:
        raise error(exc) from None

    def job(preview, stop):
        pipe = session.pipeline(model)
        return session.run(getattr(pipe, call), denoising(progress), preview, stop, **kwargs, **common)

    yield from streamed(session, model, job)


def _mode_call(
    mode: str, picture: Any, mask: Any, prompt: str, scale: Any, strength: Any, margins: tuple[Any, ...]
) -> tuple[str, dict[str, Any]]:
    """(the pipeline method of ``mode``, its arguments but the steps and the generator)."""
    if mode == "upscale":
        return "upscale", dict(image=picture, scale=float(scale), prompt=prompt, strength=float(strength))
    if mode == "outpaint":
        left, right, top, bottom = (int(m) for m in margins)
        return "outpaint", dict(image=picture, prompt=prompt, left=left, right=right, top=top, bottom=bottom)
    if mask is None:
        raise InvalidInputError("paint the part to redraw on the picture (any brush colour)")
    return "inpaint", dict(image=picture, mask=mask, prompt=prompt, strength=float(strength))
