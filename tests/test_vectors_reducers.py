"""Tests of ModelCodec/UpdateError (vectors.py) and WeightedMean (reducers.py)."""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedstale.aggregation.reducers import REDUCERS, WeightedMean
from fedstale.aggregation.vectors import ModelCodec, UpdateError


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.array(v, order="C")) for k, v in arrays.items()})


def _template_arrays() -> dict[str, np.ndarray]:
    """Float32 arrays of different shapes plus a 1-D int64 buffer (9 + 3 + 4 + 1 values)."""
    return {
        "conv.weight": np.arange(9, dtype=np.float32).reshape(3, 3) / 4,
        "conv.bias": np.array([-1.5, 0.0, 2.25], dtype=np.float32),
        "fc.weight": np.array([[1e-3, -7.0], [3.5, 42.0]], dtype=np.float32).reshape(1, 2, 2),
        "bn.num_batches_tracked": np.array([7], dtype=np.int64),
    }


def _npy_size(arr: np.ndarray) -> int:
    """Bytes of ``arr`` serialised in the .npy format (independent reference)."""
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    return len(buffer.getvalue())


# --------------------------------------------------------------------------
# ModelCodec
# --------------------------------------------------------------------------


def test_layout_counts() -> None:
    """num_parameters counts every value; keys keep the template order."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    assert codec.num_parameters == 9 + 3 + 4 + 1
    assert codec.keys == ["conv.weight", "conv.bias", "fc.weight", "bn.num_batches_tracked"]


def test_nbytes_is_serialised_size() -> None:
    """nbytes is the size of the serialised arrays (as sent in a message)."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    expected = sum(_npy_size(a) for a in arrays.values())
    raw = (9 + 3 + 4) * 4 + 8
    assert codec.nbytes == expected
    assert codec.nbytes >= raw


def test_flatten_order_and_values() -> None:
    """flatten concatenates the arrays in key order, row-major, as float32."""
    arrays = _template_arrays()
    flat = ModelCodec(_record(arrays)).flatten(_record(arrays))
    assert flat.dtype == torch.float32
    assert flat.shape == (17,)
    expected = [i / 4 for i in range(9)] + [-1.5, 0.0, 2.25] + [1e-3, -7.0, 3.5, 42.0] + [7.0]
    assert flat.tolist() == pytest.approx(expected, rel=1e-7)


def test_roundtrip_exact() -> None:
    """unflatten(flatten(r)) gives back every array bit for bit, with its dtype."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    back = codec.unflatten(codec.flatten(_record(arrays)))
    assert list(back.keys()) == list(arrays)
    for key, original in arrays.items():
        restored = back[key].numpy()
        assert restored.dtype == original.dtype, key
        assert restored.shape == original.shape, key
        np.testing.assert_array_equal(restored, original)


def test_unflatten_rounds_integer_buffers() -> None:
    """An int64 buffer is rounded to the nearest integer, not truncated."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    flat = codec.flatten(_record(arrays))
    flat[-1] = 6.7  # truncation would give 6
    assert codec.unflatten(flat)["bn.num_batches_tracked"].numpy().tolist() == [7]
    flat[-1] = 9.2
    assert codec.unflatten(flat)["bn.num_batches_tracked"].numpy().tolist() == [9]
    # float values pass through unchanged
    flat[0] = 0.3
    assert float(codec.unflatten(flat)["conv.weight"].numpy()[0, 0]) == pytest.approx(0.3)


def test_zero_dim_buffer_keeps_shape() -> None:
    """A 0-d array (torch's BatchNorm ``num_batches_tracked``) comes back 0-d.

    Its unflattened record must also flatten again against the same codec
    (the server sends unflattened models and gets them back as replies).
    """
    arrays = {"w": np.array([0.5, -0.25], dtype=np.float32), "steps": np.array(3, dtype=np.int64)}
    codec = ModelCodec(_record(arrays))
    assert codec.num_parameters == 3
    back = codec.unflatten(codec.flatten(_record(arrays)))
    assert back["steps"].numpy().shape == ()
    assert back["steps"].numpy().tolist() == 3
    assert codec.flatten(back).tolist() == [0.5, -0.25, 3.0]


def test_torch_conv_linear_state_dict_roundtrip() -> None:
    """A conv + linear model's state dict survives flatten → to_state_dict exactly."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, kernel_size=3), torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3)
    )
    state = model.state_dict()
    codec = ModelCodec(ArrayRecord(state))
    assert codec.num_parameters == 2 * 1 * 3 * 3 + 2 + 72 * 3 + 3
    flat = codec.flatten(ArrayRecord(state))
    expected = torch.cat([t.reshape(-1) for t in state.values()])
    assert torch.equal(flat, expected)
    out = codec.to_state_dict(flat)
    assert list(out) == list(state)
    for key, tensor in state.items():
        assert torch.equal(out[key], tensor), key


def test_torch_batchnorm_state_dict_roundtrip() -> None:
    """A state dict with BatchNorm buffers survives flatten → to_state_dict exactly."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )
    state = model.state_dict()
    codec = ModelCodec(ArrayRecord(state))
    expected_params = 3 * 4 + 4 + 4 * 4 + 4 * 2 + 2 + 1  # weights, biases, BN stats
    assert codec.num_parameters == expected_params
    out = codec.to_state_dict(codec.flatten(ArrayRecord(state)))
    assert list(out) == list(state)
    for key, tensor in state.items():
        assert out[key].dtype == tensor.dtype, key
        assert torch.equal(out[key], tensor), key
    model.load_state_dict(OrderedDict(out))  # loadable back into the model


def test_wrong_number_of_arrays() -> None:
    """An update with a different array count names both counts."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    short = dict(list(arrays.items())[:3])
    with pytest.raises(UpdateError, match=r"^update has 3 arrays, the model has 4$"):
        codec.flatten(_record(short))


def test_wrong_shape_names_key_and_shapes() -> None:
    """A wrong shape names the template key and both shapes."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    bad = dict(arrays)
    bad["conv.bias"] = np.zeros(4, dtype=np.float32)
    with pytest.raises(UpdateError) as info:
        codec.flatten(_record(bad))
    assert str(info.value) == "array 'conv.bias' has shape (4,), expected (3,)"


def test_wrong_dtype() -> None:
    """A float64 array where float32 is expected is rejected, naming both dtypes."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    bad = dict(arrays)
    bad["fc.weight"] = arrays["fc.weight"].astype(np.float64)
    with pytest.raises(UpdateError) as info:
        codec.flatten(_record(bad))
    assert str(info.value) == "array 'fc.weight' has dtype float64, expected float32"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(value: float) -> None:
    """NaN or ±inf anywhere in the update raises UpdateError."""
    arrays = _template_arrays()
    codec = ModelCodec(_record(arrays))
    bad = dict(arrays)
    weights = arrays["conv.weight"].copy()
    weights[2, 1] = value
    bad["conv.weight"] = weights
    with pytest.raises(UpdateError, match="NaN or infinite"):
        codec.flatten(_record(bad))


def test_update_error_is_value_error() -> None:
    """UpdateError subclasses ValueError so generic handlers catch it."""
    assert issubclass(UpdateError, ValueError)


# --------------------------------------------------------------------------
# WeightedMean
# --------------------------------------------------------------------------


def test_weighted_mean_hand_example() -> None:
    """Σ w_i u_i / Σ w_i on a 3×2 example computed by hand."""
    updates = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 10.0]])
    weights = torch.tensor([1.0, 2.0, 1.0])
    # Σw = 4; column 0: (1 + 6 + 0)/4 = 1.75; column 1: (2 − 8 + 10)/4 = 1.0
    out = WeightedMean()(updates, weights)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([1.75, 1.0], abs=1e-6)


def test_weighted_mean_zero_weight_row_ignored() -> None:
    """A zero weight removes its row from the mean."""
    updates = torch.tensor([[2.0, 4.0], [100.0, -100.0], [4.0, 8.0]])
    out = WeightedMean()(updates, torch.tensor([1.0, 0.0, 1.0]))
    assert out.tolist() == pytest.approx([3.0, 6.0], abs=1e-6)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e4])
def test_weighted_mean_scale_invariant(scale: float) -> None:
    """Scaling all weights by the same factor leaves the mean unchanged."""
    updates = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 10.0]])
    weights = torch.tensor([0.2, 0.5, 0.3])
    base = WeightedMean()(updates, weights)
    scaled = WeightedMean()(updates, weights * scale)
    assert torch.allclose(base, scaled, rtol=1e-5, atol=1e-6)
    # 0.2·1 + 0.5·3 + 0 = 1.7; 0.4 − 2 + 3 = 1.4
    assert base.tolist() == pytest.approx([1.7, 1.4], abs=1e-5)


@pytest.mark.parametrize("weights", [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
def test_weighted_mean_zero_sum_raises(weights: list[float]) -> None:
    """Weights summing to 0 raise ValueError."""
    updates = torch.ones(3, 2)
    with pytest.raises(ValueError, match="weights must have a positive sum"):
        WeightedMean()(updates, torch.tensor(weights))


def test_reducer_registry() -> None:
    """The YAML name 'mean' maps to WeightedMean; every class under its own name."""
    assert REDUCERS["mean"] is WeightedMean
    assert all(cls.name == name for name, cls in REDUCERS.items())
