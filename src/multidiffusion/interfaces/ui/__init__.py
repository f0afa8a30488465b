"""The web UI (extra ``[ui]``): the Gradio page and the session between the form and the engine."""
