"""All of a message's arrays in one Flower object (:mod:`fedstale.packing`).

Packing is lossless (the Arrays come back equal, byte for byte, in their
records' order), cuts a ``resnet8`` TRAIN message from Flower's 50 objects
to 7, is used only for nodes whose ClientApp said it unpacks, and leaves a
run's rows, model and client state as they were (``tests/test_same_rows.py``
checks the shipped configs' golden rows, which now travel packed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedstale.batching import pack_tasks
from fedstale.client_app import app as fedstale_client_app
from fedstale.models.resnet import CifarResNet
from fedstale.packing import (
    PACKED_ARRAYS,
    PACKED_LAYOUT,
    is_packed,
    pack_arrays,
    pack_message,
    packed_arrays_mod,
    unpack_arrays,
    unpack_message,
)
from fedstale.simulation.local_grid import _ensure_task_identity
from fedstale.strategies.transport import Transport
from tests.helpers import config
from tests.test_batching import _run, client_states


def _resnet8_record() -> ArrayRecord:
    """resnet8's 23 tensors, each made distinct (as after training: Flower's
    objects are content-addressed, so equal initial BatchNorm tensors would
    be sent once)."""
    torch.manual_seed(0)
    state = CifarResNet((3, 32, 32), 10, blocks=1).state_dict()
    return ArrayRecord(
        {k: torch.rand(v.shape) if v.is_floating_point() else torch.full(v.shape, i) for i, (k, v) in enumerate(state.items())}
    )


def _content() -> RecordDict:
    odd = ArrayRecord(
        {
            "scalar": Array(np.array(3.5, np.float64)),
            "ints": Array(np.arange(6, dtype=np.int64).reshape(2, 3)),
            "empty": Array(np.zeros((0, 4), np.float32)),
        }
    )
    return RecordDict(
        {
            "config": ConfigRecord({"client-id": 3, "lr": 0.1}),
            "arrays": _resnet8_record(),
            "metrics": MetricRecord({"loss": 0.5}),
            "odd": odd,
        }
    )


def _same_arrays(a: RecordDict, b: RecordDict) -> None:
    assert list(a.keys()) == list(b.keys())
    for name, record in a.items():
        other = b[name]
        if isinstance(record, ArrayRecord):
            assert list(record.keys()) == list(other.keys())
            for key, array in record.items():
                got = other[key]
                assert (got.dtype, tuple(got.shape), got.stype, got.data) == (
                    array.dtype,
                    tuple(array.shape),
                    array.stype,
                    array.data,
                ), key
        else:
            assert dict(record) == dict(other)


def _message(content: RecordDict, node: int = 7) -> Message:
    _ensure_task_identity()
    return Message(content, dst_node_id=node, message_type="train", ttl=9.0, group_id="3")


def test_packing_keeps_every_array_byte_for_byte_and_every_record_in_order():
    content = _content()
    packed = pack_arrays(content)
    assert is_packed(packed) and not is_packed(content)
    assert sorted(packed.keys()) == sorted(["config", "metrics", PACKED_ARRAYS, PACKED_LAYOUT])
    (blob,) = packed[PACKED_ARRAYS].values()
    sizes = [len(a.data) for name in ("arrays", "odd") for a in content[name].values()]
    assert len(blob.data) == sum(sizes) and list(packed[PACKED_LAYOUT]["sizes"]) == sizes
    assert packed[PACKED_LAYOUT]["order"] == ["config", "arrays", "metrics", "odd"]
    _same_arrays(content, unpack_arrays(packed))
    # and the arrays still read as the model's tensors
    state = unpack_arrays(packed)["arrays"].to_torch_state_dict()
    for key, tensor in _resnet8_record().to_torch_state_dict().items():
        assert torch.equal(state[key], tensor)


def test_content_without_arrays_is_left_alone():
    content = RecordDict({"config": ConfigRecord({"a": 1})})
    assert pack_arrays(content) is content


def test_a_bad_layout_is_refused():
    packed = pack_arrays(_content())
    packed[PACKED_LAYOUT]["sizes"] = [1] + list(packed[PACKED_LAYOUT]["sizes"])[1:]
    with pytest.raises(ValueError, match="packed arrays: the layout describes"):
        unpack_arrays(packed)
    packed = pack_arrays(_content())
    packed[PACKED_LAYOUT]["counts"] = [c + 1 for c in packed[PACKED_LAYOUT]["counts"]]
    with pytest.raises(ValueError, match="packed arrays: the layout counts 28 arrays, names 26"):
        unpack_arrays(packed)


def test_a_packed_resnet8_message_is_7_flower_objects_instead_of_50():
    content = RecordDict({"arrays": _resnet8_record(), "config": ConfigRecord({"client-id": 1})})
    plain = _message(content)
    packed = pack_message(plain)
    assert len(_resnet8_record()) == 23
    assert len(get_all_nested_objects(plain)) == 50  # message, RecordDict, 2 records, 23 Arrays, 23 chunks
    assert len(get_all_nested_objects(packed)) == 7  # message, RecordDict, 3 records, 1 Array, 1 chunk
    meta, was = packed.metadata, plain.metadata
    assert (meta.dst_node_id, meta.message_type, meta.ttl, meta.group_id) == (
        was.dst_node_id,
        was.message_type,
        was.ttl,
        was.group_id,
    )
    _same_arrays(plain.content, unpack_message(packed).content)


def test_a_batch_packs_its_tasks_models_once():
    shared = _resnet8_record()
    tasks = [_message(RecordDict({"arrays": shared, "config": ConfigRecord({"client-id": i})})) for i in range(3)]
    batch = pack_tasks(tasks)
    packed = pack_message(batch)
    assert packed.content[PACKED_LAYOUT]["records"] == ["0.arrays"]  # one copy of the shared model
    _same_arrays(batch.content, unpack_message(packed).content)


def test_the_mod_unpacks_for_the_handler_and_packs_the_reply():
    seen = []

    def handler(message, context):
        seen.append(message.content)
        reply = RecordDict({"arrays": message.content["arrays"], "metrics": MetricRecord({"num-examples": 5})})
        return Message(reply, reply_to=message)

    content = RecordDict({"arrays": _resnet8_record(), "config": ConfigRecord({"client-id": 1})})
    reply = packed_arrays_mod(pack_message(_message(content)), None, handler)
    _same_arrays(content, seen[0])
    assert is_packed(reply.content)
    _same_arrays(RecordDict({"arrays": content["arrays"], "metrics": MetricRecord({"num-examples": 5})}),
                 unpack_message(reply).content)
    # a message that is not packed passes through, and so does its reply
    plain = _message(RecordDict({"arrays": _resnet8_record(), "config": ConfigRecord({"client-id": 1})}))
    reply = packed_arrays_mod(plain, None, handler)
    assert seen[1] is plain.content and not is_packed(reply.content)


class _Grid:
    def __init__(self):
        self.pushed: list[Message] = []

    def push_messages(self, messages):
        self.pushed.extend(messages)
        return [f"m{len(self.pushed) - len(messages) + i}" for i in range(len(messages))]


class _Job:
    def __init__(self, task_id, node_id, message):
        self.task_id, self.node_id, self.earliest_finish = task_id, node_id, float(task_id)
        self.message, self.message_id, self.pushed_wall = message, None, None


def test_the_transport_packs_only_for_nodes_that_unpack():
    transport = Transport([1, 2], max_per_node=1, window=None, timeout=60.0, packed=[2])
    for task, node in ((0, 1), (1, 2)):
        content = RecordDict({"arrays": _resnet8_record(), "config": ConfigRecord({"client-id": task})})
        transport.enqueue(_Job(task, node, _message(content, node)))
    grid = _Grid()
    assert transport.push(grid) == []
    by_node = {m.metadata.dst_node_id: m for m in grid.pushed}
    assert not is_packed(by_node[1].content) and is_packed(by_node[2].content)


def test_a_stock_clientapp_is_never_sent_packed_arrays():
    app = ClientApp()

    @app.train()
    def train(message, context):
        assert not is_packed(message.content)
        arrays = message.content["arrays"]
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10})}), reply_to=message)

    cfg = config(data__num_clients=4, strategy__concurrency=2, stop__num_updates=3)
    strategy = _run(cfg, app=app)[3]
    assert strategy.placement.packed_nodes == set()
    assert strategy.transport.packed == frozenset()


def test_fedstales_clientapp_is_sent_packed_arrays_with_the_same_rows():
    """The same run with and without packing: the same rows, model and client state."""
    cfg = config(data__num_clients=6, strategy__concurrency=3, stop__num_updates=6, evaluation__every=3,
                 compression__method="topk", compression__ratio=0.2)
    packed = _run(cfg)
    strategy, grid = packed[3], packed[4]
    assert strategy.placement.packed_nodes == set(strategy.placement.nodes) != set()
    assert sum(1 for m in grid.ran if m.metadata.message_type.startswith("train")) >= 6
    unpacked = _run(cfg, app=_unpacking_disabled())
    assert unpacked[3].placement.packed_nodes == set()
    assert packed[0] == unpacked[0]
    assert torch.equal(packed[1], unpacked[1])
    assert client_states(grid) == client_states(unpacked[4])


def _unpacking_disabled() -> ClientApp:
    """fedstale's ClientApp, but its ``prepare`` reply does not offer packing."""
    from fedstale.packing import CAPABILITY_KEY

    app = fedstale_client_app

    class NoPacking:
        def __call__(self, message, context):
            reply = app(message, context)
            if message.metadata.message_type == "query" and reply.has_content():
                config = reply.content["config"]
                if CAPABILITY_KEY in config:
                    del config[CAPABILITY_KEY]
            return reply

    return NoPacking()
