"""fedstale: asynchronous, buffered and robust federated learning on Flower."""

import os as _os

__version__ = "0.1.0"

# flwr-datasets imports Matplotlib, which keeps a config and font cache in
# MPLCONFIGDIR (default ~/.config and ~/.cache/matplotlib). fedstale writes
# nothing outside the working directory, so point it there unless the user
# chose a place.
_os.environ.setdefault("MPLCONFIGDIR", _os.path.join(_os.getcwd(), ".cache", "matplotlib"))
