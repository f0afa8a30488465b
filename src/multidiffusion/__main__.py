"""``python -m multidiffusion`` runs the command line."""

from multidiffusion.interfaces.cli.main import main

raise SystemExit(main())
