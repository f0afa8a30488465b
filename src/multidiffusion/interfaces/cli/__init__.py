"""The ``multidiffusion`` command line: options built from the settings, the commands, loading with messages."""
