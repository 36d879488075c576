"""What exists only because this is a simulation: virtual time and delays."""

from .clock import Clock, VirtualClock, WallClock
from .delays import (
    DISTRIBUTION_PARAMETERS,
    DelayModel,
    Distribution,
    make_distribution,
)

__all__ = [
    "DISTRIBUTION_PARAMETERS",
    "Clock",
    "DelayModel",
    "Distribution",
    "VirtualClock",
    "WallClock",
    "make_distribution",
]
