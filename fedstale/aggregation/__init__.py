"""Pure functions and classes on tensors: staleness weights, reducers, trust, filters."""

from .filters import NormBound, ValidationCheck
from .pipeline import Pipeline, make_aggregator, parse_aggregator
from .preaggregators import PREAGGREGATORS, PreAggregator
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
from .trust import TrustTracker, agreement_score
from .vectors import ModelCodec, UpdateError

__all__ = [
    "PREAGGREGATORS",
    "REDUCERS",
    "STALENESS_FUNCTIONS",
    "STALENESS_PARAMETERS",
    "Constant",
    "Exponential",
    "Hinge",
    "ModelCodec",
    "NormBound",
    "Pipeline",
    "Polynomial",
    "PreAggregator",
    "Reducer",
    "StalenessFunction",
    "TrustTracker",
    "UpdateError",
    "ValidationCheck",
    "WeightedMean",
    "agreement_score",
    "make_aggregator",
    "make_staleness_function",
    "parse_aggregator",
]
