"""Keep the libraries' own chatter out of our output while a model loads.

diffusers, transformers and huggingface_hub print progress bars ("Loading pipeline components", "Loading
weights"), hub notices ("Couldn't connect to the Hub…", "Will try to load from local cache.") and warnings
that are false for our use (diffusers' "Pipelines loaded with dtype=torch.float16 cannot run with cpu
device": they run, only slowly — :func:`~multidiffusion.adapters.loading.resolve.resolve_dtype` says so once). Our
own progress display (``pipeline.run.progress``) replaces all of it; errors still reach the user as exceptions,
which the loaders turn into one line.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate")


@contextlib.contextmanager
def library_chatter_off() -> Iterator[None]:
    """Within the block: the libraries log errors only, show no progress bars and no deprecation warning of one
    another's arguments; restored afterwards."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    bars = (diffusers_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled())
    try:
        diffusers_logging.set_verbosity_error()
        transformers_logging.set_verbosity_error()
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        hub_utils.disable_progress_bars()
        with warnings.catch_warnings():
            # diffusers passes huggingface_hub an argument it deprecated, whenever it reads a config from the hub
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()
            hub_utils.enable_progress_bars()
