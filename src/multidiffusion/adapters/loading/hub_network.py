"""Whether the model hub can be reached, asked once in a few seconds before a hub id that must be downloaded loads.

Without it, a machine with no network learns so only after huggingface_hub's retries and back-off on every file
(docs/families.md, "Hub ids without a network"). The question goes to the endpoint downloads use
(``huggingface_hub.constants.ENDPOINT``: ``HF_ENDPOINT`` or https://huggingface.co), through huggingface_hub's own
HTTP session, so proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``) and a client factory set with
``huggingface_hub.set_client_factory`` apply as they do to the download.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

from multidiffusion.adapters.loading.hub import NO_WEIGHTS_HINT, first_line, hub_offline
from multidiffusion.core.errors import InvalidInputError

PROBE_SECONDS = 4.0
"""How long the probe waits for any answer (name lookup, connection and first response together), in seconds."""
MAX_INDEX_BYTES = 2**20  # a diffusers model_index.json lists a dozen components in about 1 kB
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def check_hub_reachable(repo_id: str, *, instead: str = NO_WEIGHTS_HINT) -> None:
    """Before loading hub id ``repo_id``: one line when it would have to be downloaded and the hub does not answer
    within :data:`PROBE_SECONDS`.

    Nothing is asked when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, or when the repo's files are in
    the local hub cache (diffusers then falls back to them at once when the hub cannot be reached).

    Args:
        repo_id: An ``owner/name`` hub id.
        instead: What the user can do without the network, ending the message.

    Raises:
        InvalidInputError: ``cannot reach the model hub (<endpoint>: <reason>) to download '<repo_id>'; …``.
    """
    if offline_mode() or in_local_cache(repo_id):
        return
    endpoint = hub_endpoint()
    reason = unreachable_reason(endpoint)
    if reason is not None:
        raise InvalidInputError(
            f"cannot reach the model hub ({shown_endpoint(endpoint)}: {reason}) to download {repo_id!r}; "
            f"connect to the network, or {instead}"
        )


def offline_mode() -> bool:
    """Whether hub access is switched off: ``HF_HUB_OFFLINE`` now, or as huggingface_hub read it (with
    ``TRANSFORMERS_OFFLINE``) at import."""
    from huggingface_hub import constants

    return hub_offline() or constants.is_offline_mode()


def hub_endpoint() -> str:
    """The hub address downloads go to (``HF_ENDPOINT`` as huggingface_hub read it, else https://huggingface.co)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def shown_endpoint(endpoint: str) -> str:
    """``scheme://host[:port]`` of the endpoint, for messages: no user name, password or path."""
    parts = urlsplit(endpoint)
    if not parts.scheme or not parts.hostname:
        return endpoint.split("@")[-1]
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def unreachable_reason(endpoint: str, seconds: float | None = None) -> str | None:
    """None when ``endpoint`` answers a HEAD request within ``seconds`` (default :data:`PROBE_SECONDS`; any HTTP
    status: the hub is reachable); else why not, in a few words ("Connection refused", "Name or service not known",
    "no answer within 4 s").

    The request runs in a daemon thread bounded by ``seconds`` as a whole, since a name lookup blocks in the C
    library where no HTTP timeout reaches it."""
    from huggingface_hub.utils import get_session

    seconds = PROBE_SECONDS if seconds is None else seconds
    answer: list[str | None] = []

    def ask() -> None:
        try:
            get_session().head(endpoint, timeout=seconds)
            answer.append(None)
        except Exception as exc:  # any failure (name lookup, refused, proxy, TLS) is no answer
            answer.append(_reason(exc))

    thread = threading.Thread(target=ask, name="multidiffusion-hub-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    return answer[0] if answer else f"no answer within {seconds:g} s"


def _reason(exc: BaseException) -> str:
    """An exception's first line without its ``[Errno N]`` prefix, at most 100 characters."""
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", first_line(exc))
    return text if len(text) <= 100 else text[:99] + "…"


def in_local_cache(repo_id: str) -> bool:
    """Whether the hub cache holds ``repo_id`` (main revision) well enough to load without the network: a pipeline
    whose ``model_index.json`` and every component folder it names are there, or a single model (a control network)
    with its ``config.json`` and a weights file."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model_index.json", "config.json"):
        try:
            path = try_to_load_from_cache(repo_id, name)
        except ValueError:  # not a valid repo id: the loader will say so
            return False
        if isinstance(path, str):
            snapshot = Path(path).parent
            return _components_present(snapshot) if name == "model_index.json" else _weights_present(snapshot)
    return False


def _components_present(snapshot: Path) -> bool:
    """Every component ``model_index.json`` names (``"unet": ["diffusers", "UNet2DConditionModel"]``) has a
    non-empty folder in the snapshot (a file appears there only once its download is complete)."""
    index_file = snapshot / "model_index.json"
    try:
        if index_file.stat().st_size > MAX_INDEX_BYTES:
            return False
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(index, dict):
        return False
    parts = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None]
    try:
        return all((snapshot / part).is_dir() and any((snapshot / part).iterdir()) for part in parts)
    except OSError:
        return False


def _weights_present(snapshot: Path) -> bool:
    """A weights file lies beside the single model's ``config.json``."""
    try:
        return any(f.name.endswith(WEIGHT_SUFFIXES) for f in snapshot.iterdir())
    except OSError:
        return False
