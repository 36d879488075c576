"""Pure functions and classes on tensors: staleness weights, reducers, codecs."""

from .reducers import REDUCERS, Reducer, WeightedMean
from .staleness import (
    STALENESS_FUNCTIONS,
    STALENESS_PARAMETERS,
    Constant,
    Exponential,
    Hinge,
    Polynomial,
    StalenessFunction,
    make_staleness_function,
)
from .vectors import ModelCodec, UpdateError

__all__ = [
    "REDUCERS",
    "STALENESS_FUNCTIONS",
    "STALENESS_PARAMETERS",
    "Constant",
    "Exponential",
    "Hinge",
    "ModelCodec",
    "Polynomial",
    "Reducer",
    "StalenessFunction",
    "UpdateError",
    "WeightedMean",
    "make_staleness_function",
]
