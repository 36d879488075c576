"""Shared fixtures: keep Flower's INFO logs out of the test output."""

from __future__ import annotations

import logging

import pytest
from flwr.common.logger import FLOWER_LOGGER


@pytest.fixture(autouse=True)
def _quiet_flower_logs():
    """Keep Flower's INFO lines out of the test output."""
    level = FLOWER_LOGGER.level
    FLOWER_LOGGER.setLevel(logging.WARNING)
    yield
    FLOWER_LOGGER.setLevel(level)
