"""Dispatching: a task's fields, its TRAIN message, the tasks in flight, and requeue after resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord

from fedstale.simulation.adversary import Adversary
from fedstale.simulation.clock import WallClock
from fedstale.simulation.local_grid import _ensure_task_identity
from fedstale.strategies.dispatch import Dispatcher
from fedstale.strategies.inflight import InFlight
from fedstale.strategies.placement import Placement
from fedstale.strategies.pool import ClientPool, RandomSelection
from fedstale.strategies.run_state import DISPATCH_FIELDS
from fedstale.strategies.task import task_seed, training_settings
from fedstale.strategies.transport import Transport
from fedstale.strategies.versions import GlobalModel, SnapshotStore


def _dispatcher(adversary=None, directives=lambda task: {}):
    _ensure_task_identity()
    pool = ClientPool(RandomSelection(0))
    pool.populate(4)
    placement = Placement([11, 22], num_clients=4, ttl=9.0)
    placement.num_examples = {0: 30, 1: 50}
    clock = WallClock()
    clock.now = 2.5
    model = GlobalModel(ArrayRecord({"w": Array(np.zeros(3, np.float32))}))
    parts = dict(
        pool=pool, placement=placement, clock=clock, inflight=InFlight(), snapshots=SnapshotStore(),
        model=model, transport=Transport([11, 22], 1, None, 60.0),
    )
    return Dispatcher(seed=4, lr_delay_alpha=0.5, adversary=adversary, directives=directives, **parts), parts


def test_training_settings_and_seed():
    assert training_settings({"local-epochs": 3, "patience": 1, "lr": 0.1}, 0.5, 2) == {
        "epochs": 3.0, "min_epochs": 2.0, "lr": pytest.approx(0.05),
    }
    assert training_settings({}, 0.5, 2) == {"epochs": 1.0, "min_epochs": 1.0, "lr": None}
    assert training_settings({"local-epochs": 2, "patience": 5}, 0.0, 0)["min_epochs"] == 2.0
    expected = int(np.random.SeedSequence([4, 5, 1, 2]).generate_state(1)[0])
    assert task_seed(4, 1, 2) == expected and task_seed(4, 1, 3) != expected


def test_a_new_task():
    dispatcher, parts = _dispatcher()
    parts["pool"].on_success(1, staleness=2)
    parts["pool"].start_task(1)  # its second task
    task = dispatcher.new_task(1, version=6, config=ConfigRecord({"lr": 0.2, "local-epochs": 2}))
    assert (task.task_id, task.client_id, task.node_id, task.index, task.dispatch_version) == (0, 1, 22, 1, 6)
    assert (task.dispatch_time, task.num_examples, task.bytes_down, task.epochs, task.min_epochs) == (
        2.5, 50, parts["model"].codec.nbytes, 2.0, 2.0,
    )
    assert task.lr == pytest.approx(0.2 / (1 + 0.5 * 2)) and task.seed == task_seed(4, 1, 1)
    assert task.earliest_finish == 2.5  # the wall clock knows nothing in advance
    assert parts["inflight"].tasks == {0: task} and parts["pool"].busy == {1}
    assert parts["snapshots"].refs(6) == 1
    other = dispatcher.new_task(2, version=6, config=ConfigRecord())
    assert (other.task_id, other.num_examples, other.lr) == (1, None, None)
    assert parts["snapshots"].refs(6) == 2 and parts["inflight"].next_task_id == 2


def test_the_train_message_carries_the_task_and_every_directive():
    params = {"boost": 2.0, "scale": 10.0, "sigma": 1.0, "target_label": 0, "trigger_size": 2, "poison_fraction": 0.5}
    adversary = Adversary("sign_flip", {3}, params)
    dispatcher, parts = _dispatcher(adversary, directives=lambda task: {"slot": task.task_id * 10})
    config = ConfigRecord({"lr": 0.1})
    plain = dispatcher.new_task(0, version=0, config=config)
    message = dispatcher.train_message(plain, parts["model"].arrays(), config)
    assert plain.message is message and message.metadata.dst_node_id == 11
    assert dict(message.content["config"]) == {
        "lr": 0.1, "client-id": 0, "num-clients": 4, "server-round": 0, "task-id": 0, "seed": plain.seed, "slot": 0,
    }
    attacker = dispatcher.new_task(3, version=0, config=ConfigRecord())
    content = dispatcher.train_message(attacker, parts["model"].arrays(), ConfigRecord()).content["config"]
    assert "lr" not in content and content["slot"] == 10
    assert {k: content[k] for k in adversary.task_config(3)} == adversary.task_config(3)
    assert content["attack"] == "sign_flip" and content["attack-boost"] == 2.0
    dispatcher.enqueue([message])
    assert parts["transport"]._waiting == [plain]  # pylint: disable=protected-access


def test_requeue_sends_each_task_again_with_its_own_base_model():
    dispatcher, parts = _dispatcher()
    old = dispatcher.new_task(1, version=0, config=ConfigRecord({"lr": 0.1}))
    fields = [{f: getattr(old, f) for f in DISPATCH_FIELDS}]
    fresh, parts = _dispatcher()
    base = np.array([1.0, 2.0, 3.0], np.float32)
    parts["snapshots"].load({0: torch.from_numpy(base)}, current=5, model=torch.zeros(3))
    fresh.requeue(fields, ConfigRecord({"lr": 0.1}))
    (task,) = parts["inflight"].tasks.values()
    assert {f: getattr(task, f) for f in DISPATCH_FIELDS} == fields[0] and task.node_id == 22
    assert parts["pool"].busy == {1} and parts["snapshots"].refs(0) == 1
    assert task.message.content["arrays"]["w"].numpy().tolist() == [1.0, 2.0, 3.0]
    assert task.message.content["config"]["task-id"] == old.task_id


def test_inflight_slots_and_replies():
    inflight = InFlight()
    assert inflight.free_slots("async", 3) == 3 and inflight.free_slots("sync", 3) == 3
    dispatcher, parts = _dispatcher()
    inflight = parts["inflight"]
    first = dispatcher.new_task(0, version=0, config=ConfigRecord())
    second = dispatcher.new_task(1, version=0, config=ConfigRecord())
    assert inflight.free_slots("async", 3) == 1 and inflight.free_slots("sync", 3) == 0
    assert [t.task_id for t in inflight] == [0, 1] and len(inflight) == 2
    inflight.replied(second, "m2")
    assert inflight.claim("m1") is None and inflight.claim("m2") is second and inflight.claim("m2") is None
    first.message_id = "m1"
    inflight.replied(first, "m1")
    inflight.forget(first)
    assert inflight.by_message == {}
    inflight.delivered(first)
    assert inflight.sorted_tasks() == [second]
    assert inflight.fields(("task_id", "client_id")) == [{"task_id": 1, "client_id": 1}]
