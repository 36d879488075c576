"""Simulated secure aggregation over a FedBuff buffer: fixed point and pairwise masks.

Flower's SecAgg+ (``secaggplus_mod``, ``SecAggPlusWorkflow``) lives in the
legacy, round-synchronous workflow API and cannot run inside an asynchronous
event loop, so fedstale simulates the part of secure aggregation that
matters to the server's view (Bonawitz et al., CCS 2017):

1. **Groups.** The server assigns each dispatched task a slot ``i`` in a
   group ``g`` of K slots (K = the buffer size; consecutive dispatches fill a
   group). The group is known when the task is dispatched, which an
   asynchronous buffer (filled in arrival order) is not: the secure buffer is
   therefore the group, and the server steps when a group is resolved.
2. **Fixed point.** A client quantises its update to integers modulo 2^32,
   q = round(Δ·2^b) (two's complement), after checking that K such values
   cannot overflow: |Δ_j| < 2^31 / (2^b·K).
3. **Pairwise masks.** Members i < j of a group share a seed s_ij; member i
   adds m_i = Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij) (mod 2^32). The masks
   cancel in the sum over all members, so the server learns Σ q_i and
   nothing else; one masked update alone is uniformly distributed.
4. **Dropout.** A member that fails, times out or is dropped as too stale
   leaves its peers' masks unbalanced. ``recover``: the survivors reveal
   their seeds with the dropped members (as SecAgg's unmasking round does
   with secret shares) and the server removes those terms; ``discard``: the
   whole group is dropped.

What is simulated and not secure: the pair seeds derive from a run seed
sent in the TRAIN config (``secagg-seed``), which a real deployment would
replace by a Diffie-Hellman key agreement between the pair; fedstale's
server code only uses them in :func:`remove_dropped_masks`, standing in for
the seeds the survivors reveal. There is no protection against a server
that lies about who dropped out (SecAgg+'s threshold does that).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MASKED_KEY = "fedstale.secagg.masked"
"""Key of the single array (uint32, one value per model scalar) a client sends."""

MASK_STREAM = 13
"""Stream word of the pair seeds, ``default_rng([seed, 13, group, i, j])``."""


class SecAggError(ValueError):
    """An update that cannot be encoded for secure aggregation."""


def fixed_point_bound(precision_bits: int, group_size: int) -> float:
    """Largest |Δ_j| whose sum over ``group_size`` members fits in int32."""
    return 2.0**31 / (2.0**precision_bits * group_size)


def quantize(delta: np.ndarray, precision_bits: int, group_size: int) -> np.ndarray:
    """round(Δ·2^b) modulo 2^32 (uint32, two's complement).

    Raises
    ------
    SecAggError
        If a coordinate is too large for the sum of ``group_size`` updates.
    """
    bound = fixed_point_bound(precision_bits, group_size)
    largest = float(np.max(np.abs(delta))) if delta.size else 0.0
    if not largest < bound:
        raise SecAggError(
            f"update coordinate {largest:g} does not fit the fixed-point range ±{bound:g} "
            f"(privacy.secagg.precision_bits={precision_bits}, {group_size} members); "
            "lower precision_bits or clip updates (privacy.central with clipping: client)"
        )
    return np.rint(delta * 2.0**precision_bits).astype(np.int64).astype(np.uint32)


def dequantize(total: np.ndarray, precision_bits: int) -> np.ndarray:
    """A sum of quantised updates back to float64 (read as int32)."""
    return total.astype(np.uint32).view(np.int32).astype(np.float64) / 2.0**precision_bits


def pair_mask(seed: int, group: int, i: int, j: int, size: int) -> np.ndarray:
    """PRG(s_ij): the mask members i and j of ``group`` share (symmetric in i, j)."""
    low, high = min(i, j), max(i, j)
    rng = np.random.default_rng([seed, MASK_STREAM, group, low, high])
    return rng.integers(0, 2**32, size=size, dtype=np.uint32)


def _signed_pair_mask(seed: int, group: int, i: int, j: int, size: int) -> np.ndarray:
    """+PRG(s_ij) for i < j, −PRG(s_ij) for i > j (mod 2^32)."""
    mask = pair_mask(seed, group, i, j, size)
    return mask if i < j else np.negative(mask)


def member_mask(seed: int, group: int, index: int, group_size: int, size: int) -> np.ndarray:
    """m_i = Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij) mod 2^32; Σ_i m_i = 0."""
    mask = np.zeros(size, dtype=np.uint32)
    for other in range(group_size):
        if other != index:
            mask += _signed_pair_mask(seed, group, index, other, size)
    return mask


def mask_update(
    delta: np.ndarray, seed: int, group: int, index: int, group_size: int, precision_bits: int
) -> np.ndarray:
    """What member ``index`` sends: quantize(Δ) + m_i mod 2^32."""
    quantized = quantize(delta, precision_bits, group_size)
    return quantized + member_mask(seed, group, index, group_size, delta.size)


def remove_dropped_masks(
    masked_sum: np.ndarray,
    seed: int,
    group: int,
    survivors: Iterable[int],
    dropped: Iterable[int],
) -> np.ndarray:
    """The survivors' Σ q_i from their masked sum when members ``dropped`` never sent.

    The survivors' pair masks among themselves cancel; what is left is
    Σ_{i∈S} Σ_{j∈D} ±PRG(s_ij), which the revealed seeds let the server
    subtract.
    """
    dropped = list(dropped)
    total = masked_sum.astype(np.uint32).copy()
    for i in survivors:
        for j in dropped:
            total -= _signed_pair_mask(seed, group, i, j, total.size)
    return total
