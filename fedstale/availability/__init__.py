"""Client availability (``availability.model``), one model a file.

- ``always`` (:class:`AlwaysOnline`, the default): every client online all the time
- ``on_off`` (:class:`OnOff`): alternating exponential online/offline periods per client
- ``trace`` (:class:`Trace`): online intervals replayed from a ``client_id,start,end``
  CSV (the form of FedScale's device availability traces)

The models are simulated, on the virtual clock: the loop dispatches only to
online clients, a task whose client goes offline before it finishes is lost
(dropped, ``offline at t=...`` in ``clients.csv``), and the clock jumps to
the next time a client comes online when nothing else happens first.
"""

from __future__ import annotations

from .always import AlwaysOnline
from .base import Availability
from .on_off import OnOff
from .trace import COLUMNS, Trace, TraceError, read_trace

AVAILABILITY_MODELS: dict[str, type[Availability]] = {
    cls.name: cls for cls in (AlwaysOnline, OnOff, Trace)
}
"""Registry keyed by the names used in YAML (``availability.model``)."""


def make_availability(
    name: str,
    *,
    seed: int = 0,
    mean_online: float = 60.0,
    mean_offline: float = 20.0,
    trace: str = "",
) -> Availability:
    """The model ``name`` with the parameters it uses.

    Raises
    ------
    ValueError
        If ``name`` is unknown, or its parameters are invalid (a
        :class:`TraceError` for a bad trace file).
    """
    if name == "always":
        return AlwaysOnline()
    if name == "on_off":
        return OnOff(mean_online, mean_offline, seed)
    if name == "trace":
        return Trace.from_csv(trace)
    raise ValueError(
        f"unknown availability model '{name}'; accepted: {', '.join(AVAILABILITY_MODELS)}"
    )


__all__ = [
    "AVAILABILITY_MODELS",
    "COLUMNS",
    "AlwaysOnline",
    "Availability",
    "OnOff",
    "Trace",
    "TraceError",
    "make_availability",
    "read_trace",
]
