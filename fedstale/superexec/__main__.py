"""``python -m fedstale.superexec``: see :mod:`fedstale.superexec`."""

import sys

from . import main

sys.exit(main())
