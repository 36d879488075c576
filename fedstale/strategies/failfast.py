"""Stop a run whose first replies all fail the same way (a bug or bad input).

A client that fails once is retried, and one that keeps failing is left out
(``comm.max_retries``, ``comm.retry_backoff``): that is right for a flaky
client or a SuperNode that is down. It is wrong when *every* client fails
with the same exception because of a bug in the ClientApp or a bad
setting: the loop would drain every client through its retries and end the
run with nothing learned and nothing said. :class:`FailFast` watches the
start of the run: if the first ``threshold`` replies, from that many
different clients, all fail with the same reason before any reply
succeeds, the run is stopped with that reason.

Only failures that repeat deterministically count: a ClientApp that raised
or could not be loaded, a mod's failed precondition, an invalid FAB, and
malformed updates. Transient ones (timeouts, pushes that failed, "Node
Unavailable", "Message Unavailable", a crashed ClientApp process) keep the
retry-and-backoff behaviour (they are not counted), and so does everything
after the first successful reply or a second, different, failure reason.
"""

from __future__ import annotations

from flwr.common.constant import ErrorCode

DETERMINISTIC_ERROR_CODES = frozenset(
    {
        ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
        ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
        ErrorCode.MOD_FAILED_PRECONDITION,
        ErrorCode.INVALID_FAB,
    }
)
"""Flower error codes a retry of the same task reproduces."""


class RunAborted(RuntimeError):
    """The run was stopped because its first replies all failed the same way."""


class FailFast:
    """Watches the first replies of a run for one repeated deterministic failure.

    Parameters
    ----------
    threshold : int
        Different clients that must fail with the same reason, before any
        reply succeeds, to stop the run. It is capped by the number of
        clients (a federation of 2 stops after 2). 0 turns the check off.
    """

    def __init__(self, threshold: int) -> None:
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.reset()

    def reset(self, num_clients: int | None = None) -> None:
        """Forget what was seen (a new run of ``num_clients`` clients)."""
        self._needed = self.threshold if num_clients is None else min(self.threshold, num_clients)
        self._watching = self._needed > 0
        self._reason: str | None = None
        self._clients: set[int] = set()

    @property
    def watching(self) -> bool:
        """Whether no reply has succeeded yet and every failure so far was the same."""
        return self._watching

    @property
    def num_clients_failed(self) -> int:
        """Different clients seen failing with the watched reason."""
        return len(self._clients)

    def on_success(self) -> None:
        """A reply succeeded: the failures seen so far were not a pattern."""
        self._watching = False

    def on_failure(self, client_id: int, reason: str, deterministic: bool) -> str | None:
        """Count one failed reply; return the reason to stop the run with, or None.

        Parameters
        ----------
        client_id : int
            The client whose reply failed.
        reason : str
            Why it failed (the ``reason`` column of ``clients.csv``).
        deterministic : bool
            Whether a retry would fail the same way (see
            :data:`DETERMINISTIC_ERROR_CODES`). Transient failures are not
            counted and do not end the watch: a SuperNode that is down does
            not hide that the others all raise the same exception.
        """
        if not self._watching or not deterministic:
            return None
        if self._reason is not None and reason != self._reason:
            self._watching = False
            return None
        self._reason = reason
        self._clients.add(client_id)
        if len(self._clients) < self._needed:
            return None
        self._watching = False
        return reason
