"""``python -m multidiffusion`` runs the command line."""

from .interfaces.cli import main

raise SystemExit(main())
