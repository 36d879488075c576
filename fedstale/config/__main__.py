"""``python -m fedstale.config``: see :func:`fedstale.config.cli.main`."""

from .cli import main

raise SystemExit(main())
