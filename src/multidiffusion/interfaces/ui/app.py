"""``multidiffusion ui``: a Gradio page for panoramas and painted regions (extra ``[ui]``; docs/ui.md).

Gradio is the web framework. This module assembles the page and serves it; each tab is a module of :mod:`.tabs`
(what they share is in :mod:`.widgets`) and hands its runs to :class:`~multidiffusion.interfaces.ui.session.UiSession`,
which does the work one run at a time. Errors show as a message in the page (``gr.Error``), never a traceback. Bound
to 127.0.0.1 unless ``--host`` says otherwise; no public share link unless ``--share``.
"""

from __future__ import annotations

import argparse
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.ui.session import TOY, UiSession

MAX_UPLOAD = "20mb"


def build_app(session: UiSession) -> Any:
    """The Gradio Blocks app of ``session`` (not launched): the header, the model picker, the tabs (each from its
    module in :mod:`~multidiffusion.interfaces.ui.tabs`) and the gallery of the session's images they share."""
    import gradio as gr

    from multidiffusion.interfaces.ui.tabs import image, panorama, regions
    from multidiffusion.interfaces.ui.viewer import loader_js, serve_static
    from multidiffusion.interfaces.ui.widgets import Page

    serve_static()
    with gr.Blocks(title="multidiffusion") as app:
        gr.Markdown("# multidiffusion\nPanoramas and painted regions from a diffusion model (docs/ui.md).")
        model = gr.Dropdown(session.choices(), value=session.default_model, label="model", elem_id="model")
        panorama_tab, regions_tab, image_tab = panorama.build(), regions.build(), image.build()
        gallery = gr.Gallery(label="this session", columns=6, height=220, elem_id="gallery")
        page = Page(session, model, gallery)
        panorama.wire(panorama_tab, page)
        regions.wire(regions_tab, page)
        image.wire(image_tab, page)
        app.load(None, None, None, js=loader_js())  # the 360° viewer's library, once per page
    return app


def add_ui(u: argparse.ArgumentParser) -> None:
    """The ``ui`` command's options."""
    u.description = (
        "Serve a Gradio page on 127.0.0.1 (docs/ui.md): panoramas, regions painted in colours, cancel, "
        "the session's images. --model toy needs no weights."
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
    # quiet: Gradio's own start-up text tells a Python caller to set share=True in launch(); ours names the options
    app.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        max_file_size=MAX_UPLOAD,
        allowed_paths=[str(session.out_dir)],
        quiet=True,
        prevent_thread_lock=True,
    )
    print(startup_text(args.host, args.port, shared=bool(app.share_url)), flush=True)
    app.block_thread()
    return 0


def startup_text(host: str, port: int, shared: bool) -> str:
    """What ``multidiffusion ui`` prints once it serves: where, and how to reach it from elsewhere with its own
    options (``--share``, ``--host``). Gradio prints the public link itself where ``shared``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    lines = [f"multidiffusion ui: serving http://{shown}:{port} (Ctrl+C stops it)"]
    if not shared:
        lines.append("for a public gradio.live link as well, start it with --share")
    if host in ("127.0.0.1", "localhost", "::1"):
        lines.append("only this machine can open it; --host 0.0.0.0 serves other machines")
    return "\n".join(lines)
