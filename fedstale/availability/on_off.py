"""``on_off``: each client alternates online and offline periods of random length."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .base import Availability


class OnOff(Availability):
    """An alternating renewal process per client, exponential periods.

    Client c draws from its own generator ``default_rng([seed, 7, c])``:
    first whether it starts online, with probability
    p = mean_online / (mean_online + mean_offline) (the long-run share of
    time online, so the process is stationary from t = 0), then the lengths
    of its periods in turn, online ~ Exp(mean_online), offline ~
    Exp(mean_offline). The intervals depend only on the seed and the client,
    not on when the loop asks (they are drawn lazily, in order).

    Parameters
    ----------
    mean_online : float
        Mean length of an online period, in virtual seconds (> 0).
    mean_offline : float
        Mean length of an offline period, in virtual seconds (> 0).
    seed : int (default: 0)
        The run's seed.
    """

    name = "on_off"

    def __init__(self, mean_online: float, mean_offline: float, seed: int = 0) -> None:
        if mean_online <= 0 or mean_offline <= 0:
            raise ValueError(
                f"mean_online and mean_offline must be > 0, got {mean_online}, {mean_offline}"
            )
        self.mean_online, self.mean_offline, self.seed = mean_online, mean_offline, seed
        self._drawn: dict[int, tuple[np.random.Generator, list[tuple[float, float]], float]] = {}

    def _draw_one(self, client: int) -> None:
        """Draw the client's next online interval (after its first state, if new)."""
        if client not in self._drawn:
            rng = np.random.default_rng([self.seed, 7, client])
            share = self.mean_online / (self.mean_online + self.mean_offline)
            start = 0.0 if rng.random() < share else float(rng.exponential(self.mean_offline))
            self._drawn[client] = (rng, [], start)
        rng, intervals, start = self._drawn[client]
        end = start + float(rng.exponential(self.mean_online))
        intervals.append((start, end))
        self._drawn[client] = (rng, intervals, end + float(rng.exponential(self.mean_offline)))

    def intervals(self, client: int) -> Iterator[tuple[float, float]]:
        """The client's online intervals, drawn as far as they are asked for."""
        index = 0
        while True:
            if client not in self._drawn or index >= len(self._drawn[client][1]):
                self._draw_one(client)
            yield self._drawn[client][1][index]
            index += 1

    def describe(self) -> str:
        """The model with its parameters, for logs."""
        return f"on_off (online ~ Exp({self.mean_online:g} s), offline ~ Exp({self.mean_offline:g} s))"
