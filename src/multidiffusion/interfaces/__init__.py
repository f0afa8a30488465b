"""User interfaces: the command line (and later the web UI and benchmark scripts)."""
