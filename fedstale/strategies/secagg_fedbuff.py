"""FedBuff whose server sees only buffer sums: simulated secure aggregation."""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from ..aggregation.reducers import WeightedMean
from ..aggregation.secagg import MASKED_KEY, dequantize, remove_dropped_masks
from ..aggregation.vectors import UpdateError
from ..progress import log_line
from .fedbuff import FedBuff
from .task import ClientUpdate, Task

DROPOUT_POLICIES = ("recover", "discard")


@dataclass
class _Group:
    """The K slots of one secure buffer."""

    size: int
    arrived: dict[int, ClientUpdate] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)

    @property
    def resolved(self) -> bool:
        """Every slot has either arrived or dropped out."""
        return len(self.arrived) + len(self.dropped) >= self.size


class SecAggFedBuff(FedBuff):
    """FedBuff over secure groups: the server learns only each group's sum.

    Consecutive dispatches fill groups of K slots (K = ``buffer_size``; in
    ``sync`` mode a group is a round of ``concurrency``). Each client masks
    its fixed-point update (:mod:`fedstale.client.secagg`); the masks cancel
    in the group's sum (:mod:`fedstale.aggregation.secagg`). When every slot
    of a group has arrived or dropped out, the server unmasks the sum of the
    n arrived updates (removing the dropped members' masks with
    ``dropout="recover"``, or discarding the group with ``"discard"``) and
    steps:

        d = s̄ · (1/n) Σ_i Δ_i     normalization="count", s̄ = (1/n) Σ_i s(τ_i),
                                  τ_i counted when the group resolves
        d = (1/n) Σ_i Δ_i         normalization="weight_sum"

    then momentum and η_g as in FedBuff. Individual updates cannot be
    weighted (the server never sees one), so staleness scales the whole step
    by the group's mean weight s̄; with n = K and equal staleness this is
    FedBuff's step exactly. With central DP the clients clip (the server
    cannot) and the server adds N(0, (z·C/n)²) to the unmasked mean.

    Robust reducers, trust and server-side (omniscient) attacks need the
    individual updates and are refused by the configuration.

    Parameters
    ----------
    dropout : str (default: "recover")
        ``recover`` or ``discard``.
    precision_bits : int (default: 16)
        Fixed-point fraction bits b (resolution 2^-b).
    secagg_seed : int (default: 0)
        Seed of the simulated pair seeds.
    **kwargs
        Passed to :class:`~fedstale.strategies.fedbuff.FedBuff` (its
        ``reducer`` must be the mean).
    """

    supports_resume = False
    """Groups in flight hold members' masks that a new run cannot re-form."""

    def __init__(
        self,
        *,
        dropout: str = "recover",
        precision_bits: int = 16,
        secagg_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if dropout not in DROPOUT_POLICIES:
            raise ValueError(
                f"dropout must be one of {', '.join(DROPOUT_POLICIES)}, got '{dropout}'"
            )
        reducer = kwargs.get("reducer")
        if reducer is not None and not isinstance(reducer, WeightedMean):
            raise ValueError(
                f"secure aggregation reveals only sums; reducer '{reducer.name}' needs "
                "individual updates"
            )
        if kwargs.get("trust") is not None:
            raise ValueError("secure aggregation hides individual updates; trust needs them")
        self.dropout = dropout
        self.precision_bits = precision_bits
        self.secagg_seed = secagg_seed
        super().__init__(**kwargs)

    def summary(self) -> None:
        """Log the configuration."""
        log(
            INFO,
            "\t├──> Secure aggregation: groups of %d, %d-bit fixed point, dropout=%s",
            self.group_size,
            self.precision_bits,
            self.dropout,
        )
        super().summary()

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self._groups: dict[int, _Group] = {}
        self._slot_of_task: dict[int, tuple[int, int]] = {}
        self._next_slot = 0
        self.discarded_groups = 0

    @property
    def group_size(self) -> int:
        """K: slots per secure group."""
        return self.concurrency if self.mode == "sync" else self.buffer_size

    # ------------------------------------------------------------------
    # Dispatch: each task gets a slot
    # ------------------------------------------------------------------

    def task_directives(self, task: Task) -> dict[str, Any]:
        """The task's group and slot, and the fixed-point and seed settings."""
        group, index = divmod(self._next_slot, self.group_size)
        self._next_slot += 1
        self._groups.setdefault(group, _Group(self.group_size))
        self._slot_of_task[task.task_id] = (group, index)
        return {
            "secagg-group": group,
            "secagg-index": index,
            "secagg-size": self.group_size,
            "secagg-bits": self.precision_bits,
            "secagg-seed": self.secagg_seed,
        }

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        """Build the TRAIN messages; a sync round with fewer clients is a smaller group.

        A round is short when clients were left out after failures: its
        members are told the real group size before anything is sent.
        """
        messages = list(super().configure_train(server_round, arrays, config, grid))
        partial = self._next_slot % self.group_size
        if self.mode == "sync" and partial:
            self._groups[self._next_slot // self.group_size].size = partial
            for message in messages:
                message.content["config"]["secagg-size"] = partial
            self._next_slot += self.group_size - partial
        return messages

    # ------------------------------------------------------------------
    # Replies: masked vectors in, one step per resolved group
    # ------------------------------------------------------------------

    def decode_update(self, task: Task, arrays: ArrayRecord) -> torch.Tensor:
        """The masked uint32 vector (as int64), checked against the model size."""
        if list(arrays.keys()) != [MASKED_KEY]:
            raise UpdateError(
                f"secure aggregation expects one array '{MASKED_KEY}', got {list(arrays.keys())}"
            )
        masked = arrays[MASKED_KEY].numpy()
        if masked.dtype != np.uint32 or masked.shape != (self.codec.num_parameters,):
            raise UpdateError(
                f"'{MASKED_KEY}' must be uint32 of shape ({self.codec.num_parameters},), "
                f"got {masked.dtype} {masked.shape}"
            )
        return torch.from_numpy(masked.astype(np.int64))

    def on_task_dropped(self, task: Task) -> None:
        """A failed or too-stale member leaves its slot empty."""
        slot = self._slot_of_task.pop(task.task_id, None)
        if slot is not None:
            self._groups[slot[0]].dropped.add(slot[1])

    def aggregate_updates(
        self, model: torch.Tensor, updates: list[ClientUpdate]
    ) -> torch.Tensor | None:
        """Put each update in its group; step for every group now resolved."""
        for update in updates:
            group, index = self._slot_of_task.pop(update.task.task_id)
            update.weight = self.staleness_weight(update)  # logged; the step re-counts τ
            self._groups[group].arrived[index] = update
        new_model = None
        for group_id in sorted(g for g, group in self._groups.items() if group.resolved):
            group = self._groups.pop(group_id)
            step = self._secure_step(model if new_model is None else new_model, group_id, group)
            new_model = step if step is not None else new_model
        return new_model

    def _secure_step(
        self, model: torch.Tensor, group_id: int, group: _Group
    ) -> torch.Tensor | None:
        """Unmask a resolved group's sum and step; None if nothing to apply."""
        if not group.arrived:
            return None
        if group.dropped and self.dropout == "discard":
            self.discarded_groups += 1
            log_line(
                "secure group %d discarded: %d of %d members dropped out",
                group_id, len(group.dropped), group.size, warning=True,
            )
            return None
        members = sorted(group.arrived)
        masked_sum = np.zeros(self.codec.num_parameters, dtype=np.uint32)
        for index in members:
            masked_sum += group.arrived[index].params.numpy().astype(np.uint32)
        if group.dropped:
            masked_sum = remove_dropped_masks(
                masked_sum, self.secagg_seed, group_id, members, sorted(group.dropped)
            )
        count = len(members)
        mean = torch.from_numpy(dequantize(masked_sum, self.precision_bits) / count)
        direction = mean.to(model.dtype)
        if self.normalization == "count":
            weights = [self.staleness(self.version - group.arrived[i].task.dispatch_version) for i in members]
            direction = direction * float(np.mean(weights))
        if self.central_dp is not None:
            direction = self.central_dp.release(direction, count)
        return self.apply_direction(model, direction)
