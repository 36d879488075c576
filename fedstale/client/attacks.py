"""Client-side Byzantine attacks, as a Flower client mod.

In simulation the server decides which clients are malicious and adds the
attack to *their TRAIN messages only* (see
:class:`fedstale.simulation.adversary.Adversary`): the message's ConfigRecord
gets ``attack`` (the name below) and ``attack-boost``, ``attack-scale``,
``attack-sigma``, ``attack-target``, ``attack-trigger-size``,
``attack-poison-fraction``, next to the task's ``seed``. :func:`attack_mod`,
installed on fedstale's ClientApp, lets that attack act on the message:

- **before** the client trains (data poisoning), it adds directives to the
  config the NumPyClient sees: ``poison-label-flip`` (fraction) or
  ``poison-backdoor-target``, ``poison-backdoor-trigger-size``,
  ``poison-backdoor-fraction``; :class:`~fedstale.client.TorchClient`
  applies them to a copy of its data (:func:`fedstale.data.backdoor.poison_examples`);
- **after** (model poisoning), it rewrites the reply's update
  Δ = x_returned − x_received over all the float arrays, flattened in the
  order of the ArrayRecord; keys, shapes and dtypes are kept, integer (and
  other non-float) arrays are returned as the client sent them.

==============  =============================  ==========================================
name            parameters (config key)        effect
==============  =============================  ==========================================
``sign_flip``   boost (``attack-boost``)       Δ' = −boost·Δ
``scaling``     scale (``attack-scale``)       Δ' = scale·Δ
``model_scaling`` scale (``attack-scale``)     sends scale·x_local: Δ' = scale·(x_base + Δ) − x_base
``gaussian``    sigma (``attack-sigma``)       Δ' ~ N(0, σ²) i.i.d. per coordinate: the
                                               update is *replaced* by noise, as byzfl's
                                               ``Gaussian(mu=0, sigma)`` does; the noise
                                               comes from ``default_rng([seed, 7])``
``label_flip``  poison_fraction                trains with y → 9 − y ((classes − 1) − y,
                (``attack-poison-fraction``)   byzfl's convention) on round(f·n) examples
``backdoor``    target (``attack-target``),    stamps the trigger and relabels to
                trigger_size                   ``target`` round(f·n) examples, then
                (``attack-trigger-size``),     Δ' = boost·Δ (model replacement,
                poison_fraction, boost         Bagdasaryan et al., 2020)
==============  =============================  ==========================================

Relation to byzfl: byzfl's ``SignFlipping`` is omniscient (−mean of the
honest vectors); ``sign_flip`` here is the client-side variant that flips
the attacker's own update (−boost·Δ; boost = 1 is byzfl's formula applied to
the attacker's own update). byzfl's ``LabelFlipping`` flips every label
(fraction 1.0 here). Omniscient attacks (``alie``, ``ipm``) run on the
server: :mod:`fedstale.simulation.omniscient`.

Messages without an ``attack`` key (honest clients, real deployments),
EVALUATE and QUERY messages and error replies pass through untouched. An
unknown ``attack`` raises ValueError, which the ClientApp turns into an error
reply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from .updates import flat_delta

GAUSSIAN_STREAM = 7
"""Second word of the Gaussian attack's seed, ``default_rng([seed, 7])``, so
its noise does not share a stream with other uses of the task seed."""


class ClientAttack:
    """An attack run by a malicious client: poison its data, its update, or both.

    Built from the TRAIN message's config; defaults apply to absent keys.
    """

    name: str = ""

    def __init__(self, config: dict[str, Any]) -> None:
        self.boost = float(config.get("attack-boost", 1.0))
        self.scale = float(config.get("attack-scale", 10.0))
        self.sigma = float(config.get("attack-sigma", 1.0))
        self.target = int(config.get("attack-target", 0))
        self.trigger_size = int(config.get("attack-trigger-size", 2))
        self.poison_fraction = float(config.get("attack-poison-fraction", 1.0))
        self.seed = int(config.get("seed", 0))

    def poison_config(self) -> dict[str, int | float]:
        """Data-poisoning directives added to the client's config (none by default)."""
        return {}

    def poison_update(self, delta: np.ndarray) -> np.ndarray:
        """The flat float64 update to send instead of ``delta`` (``delta`` by default)."""
        return delta

    def poison(self, delta: np.ndarray, base: np.ndarray) -> np.ndarray:
        """The update to send, given Δ and the model x_base it started from (flat float64).

        Update attacks only need Δ (:meth:`poison_update`); attacks on the
        whole model override this.
        """
        del base
        return self.poison_update(delta)


class SignFlip(ClientAttack):
    """``sign_flip``: Δ' = −boost·Δ."""

    name = "sign_flip"

    def poison_update(self, delta: np.ndarray) -> np.ndarray:
        """Flip and boost."""
        return -self.boost * delta


class Scaling(ClientAttack):
    """``scaling``: Δ' = scale·Δ."""

    name = "scaling"

    def poison_update(self, delta: np.ndarray) -> np.ndarray:
        """Scale."""
        return self.scale * delta


class ModelScaling(ClientAttack):
    """``model_scaling``: send scale·x_local, i.e. Δ' = scale·(x_base + Δ) − x_base.

    The whole model is multiplied, not only the update (``scaling``): under
    FedAvg the mean model grows by about 1 + f·(scale − 1) every round and
    diverges; a norm check or any robust reducer sees it at once.
    """

    name = "model_scaling"

    def poison(self, delta: np.ndarray, base: np.ndarray) -> np.ndarray:
        """scale·(x_base + Δ) − x_base."""
        return self.scale * (base + delta) - base


class GaussianNoise(ClientAttack):
    """``gaussian``: Δ' ~ N(0, σ²) per coordinate (the update is replaced by noise)."""

    name = "gaussian"

    def poison_update(self, delta: np.ndarray) -> np.ndarray:
        """Noise from ``default_rng([seed, 7])``, as many coordinates as Δ."""
        rng = np.random.default_rng([self.seed, GAUSSIAN_STREAM])
        return rng.normal(0.0, self.sigma, size=delta.shape)


class LabelFlip(ClientAttack):
    """``label_flip``: train with y → 9 − y on ``poison_fraction`` of the examples."""

    name = "label_flip"

    def poison_config(self) -> dict[str, int | float]:
        """Ask the client to flip labels."""
        return {"poison-label-flip": self.poison_fraction}


class Backdoor(ClientAttack):
    """``backdoor``: trigger + ``target`` label on ``poison_fraction`` of the examples; Δ' = boost·Δ."""

    name = "backdoor"

    def poison_config(self) -> dict[str, int | float]:
        """Ask the client to stamp the trigger."""
        return {
            "poison-backdoor-target": self.target,
            "poison-backdoor-trigger-size": self.trigger_size,
            "poison-backdoor-fraction": self.poison_fraction,
        }

    def poison_update(self, delta: np.ndarray) -> np.ndarray:
        """Boost (model replacement)."""
        return self.boost * delta


CLIENT_ATTACKS: dict[str, type[ClientAttack]] = {
    cls.name: cls for cls in (SignFlip, Scaling, ModelScaling, GaussianNoise, LabelFlip, Backdoor)
}
"""Registry keyed by ``attack.name`` (the ``attack`` config key)."""


def make_attack(config: dict[str, Any]) -> ClientAttack:
    """The attack named by ``config['attack']``; ValueError naming the accepted ones."""
    name = str(config["attack"])
    if name not in CLIENT_ATTACKS:
        raise ValueError(f"unknown attack '{name}'; accepted: {', '.join(CLIENT_ATTACKS)}")
    return CLIENT_ATTACKS[name](config)


def poison_arrays(attack: ClientAttack, sent: ArrayRecord, returned: ArrayRecord) -> ArrayRecord:
    """``returned`` with its float arrays replaced by sent + attack(returned − sent).

    Δ is computed in float64 over the float arrays flattened in record
    order; the result is cast back to each array's dtype. Other arrays are
    kept as returned.
    """
    new = {key: returned[key].numpy() for key in returned.keys()}
    floats = [key for key, value in new.items() if np.issubdtype(value.dtype, np.floating)]
    if not floats:
        return returned
    delta = flat_delta(sent, returned, floats)
    base = {key: sent[key].numpy() for key in floats}
    flat_base = np.concatenate([base[key].astype(np.float64).ravel() for key in floats])
    poisoned = np.asarray(attack.poison(delta, flat_base), dtype=np.float64)
    offset = 0
    for key in floats:
        size = new[key].size
        part = poisoned[offset : offset + size].reshape(new[key].shape)
        new[key] = (base[key].astype(np.float64) + part).astype(new[key].dtype)
        offset += size
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in new.items()})


def attack_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower client mod running the attack named in a TRAIN message's config.

    Install it as ``build_client_app(client_fn, train_mods=[attack_mod])``
    (or ``mods=[attack_mod]``: it ignores other message types itself).
    """
    if message.metadata.message_type != MessageType.TRAIN or not message.has_content():
        return call_next(message, context)
    configs = message.content.config_records
    config_key = next(iter(configs), None)  # the record the bridge reads
    if config_key is None or "attack" not in configs[config_key]:
        return call_next(message, context)
    original = configs[config_key]
    attack = make_attack(dict(original))
    sent = next(iter(message.content.array_records.values()), None)
    directives = attack.poison_config()
    if directives:
        message.content[config_key] = ConfigRecord({**original, **directives})
    try:
        reply = call_next(message, context)
    finally:
        # The message may be the server's own object (in-process grids).
        message.content[config_key] = original
    if reply.has_error() or sent is None:
        return reply
    returned_key = next(iter(reply.content.array_records), None)
    if returned_key is None:
        return reply
    reply.content[returned_key] = poison_arrays(
        attack, sent, reply.content.array_records[returned_key]
    )
    return reply
