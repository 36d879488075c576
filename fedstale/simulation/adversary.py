"""Byzantine clients injected by the simulation.

:class:`Adversary` decides which clients are malicious (a seeded share of
the population, or explicit ids) and what the simulation does for them:

- **client-side attacks** (``label_flip``, ``gaussian``, ``sign_flip``,
  ``scaling``, ``backdoor``): the server adds the attack's directive to those
  clients' TRAIN messages (``attack`` and ``attack-*`` keys); fedstale's
  ClientApp runs :func:`fedstale.client.attacks.attack_mod`, a Flower client
  mod that poisons the client's data or its update. Honest clients' messages
  carry no directive, and a real deployment sends none.
- **omniscient attacks** (``alie``, ``ipm``) need the honest clients'
  updates, which only the server sees: the malicious client trains honestly
  and, when its reply reaches the server, the simulation replaces its delta
  by one crafted from the last ``window`` honest deltas it received
  (:mod:`fedstale.simulation.omniscient`). This models the strongest
  attacker of the literature (it knows the honest updates), as a property
  of the simulation, not of the server's aggregation.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from ..strategies.task import ClientUpdate

CLIENT_SIDE = ("label_flip", "gaussian", "sign_flip", "scaling", "model_scaling", "backdoor")
OMNISCIENT = ("alie", "ipm")


def choose_malicious(num_clients: int, fraction: float, explicit: str, seed: int) -> set[int]:
    """Malicious client ids: ``explicit`` ("3,7") if given, else round(fraction·n) at random."""
    if explicit.strip():
        return {int(part) for part in explicit.split(",") if part.strip()}
    count = int(round(fraction * num_clients))
    rng = np.random.default_rng([seed, 6])
    return {int(c) for c in rng.choice(num_clients, size=count, replace=False)}


class Adversary:  # pylint: disable=too-many-instance-attributes
    """The simulation's Byzantine clients and their attack.

    Parameters
    ----------
    name : str
        Attack name (see module docstring).
    malicious : set[int]
        Ids of the malicious clients.
    params : dict
        The attack's parameters: ``boost``, ``scale``, ``sigma``,
        ``target_label``, ``trigger_size``, ``poison_fraction`` (client-side)
        or ``z``, ``epsilon`` (omniscient).
    window : int
        Honest deltas an omniscient attacker looks at.
    """

    run_state_attributes = ("_honest",)
    """What :func:`fedstale.component_state.capture` saves (what :meth:`reset` clears)."""

    def __init__(
        self, name: str, malicious: set[int], params: dict[str, float], window: int = 10
    ) -> None:
        if name not in CLIENT_SIDE + OMNISCIENT:
            raise ValueError(
                f"unknown attack '{name}'; accepted: {', '.join(CLIENT_SIDE + OMNISCIENT)}"
            )
        self.name = name
        self.malicious = set(malicious)
        self.params = dict(params)
        self._honest: deque[torch.Tensor] = deque(maxlen=window)
        self._crafter = None
        if name in OMNISCIENT:
            # pylint: disable=import-outside-toplevel
            from .omniscient import OMNISCIENT_ATTACKS

            kwargs = {"z": params["z"]} if name == "alie" else {"epsilon": params["epsilon"]}
            self._crafter = OMNISCIENT_ATTACKS[name](**kwargs)

    def reset(self) -> None:
        """Forget the honest updates seen (a new run)."""
        self._honest.clear()

    def is_malicious(self, client_id: int) -> bool:
        """Whether ``client_id`` is Byzantine (the simulation's ground truth)."""
        return client_id in self.malicious

    def task_config(self, client_id: int) -> dict[str, int | float | str]:
        """Attack directive for a malicious client's TRAIN message (client-side attacks)."""
        if client_id not in self.malicious or self.name not in CLIENT_SIDE:
            return {}
        p = self.params
        return {
            "attack": self.name,
            "attack-boost": float(p["boost"]),
            "attack-scale": float(p["scale"]),
            "attack-sigma": float(p["sigma"]),
            "attack-target": int(p["target_label"]),
            "attack-trigger-size": int(p["trigger_size"]),
            "attack-poison-fraction": float(p["poison_fraction"]),
        }

    def intercept(self, update: ClientUpdate) -> None:
        """Server side: remember honest deltas; replace a malicious one (omniscient)."""
        if update.task.client_id not in self.malicious:
            self._honest.append(update.delta)
            return
        if self._crafter is None or not self._honest:
            return
        crafted = self._crafter.craft(torch.stack(list(self._honest)))
        if crafted is not None:
            update.params = update.base + crafted.to(update.base.dtype)
