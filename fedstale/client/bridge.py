"""Bridge a Flower ``NumPyClient`` to a Message-API ``ClientApp``.

``build_client_app(client_fn)`` turns any ``client_fn(context) ->
NumPyClient`` (the signature Flower users already have) into a ``ClientApp``
that answers fedstale's messages:

- TRAIN → ``client.fit(parameters, config)``; the reply holds one
  ArrayRecord (same keys as the model sent) and one MetricRecord with the
  client's metrics plus ``num-examples`` and ``fit-seconds``;
- EVALUATE → ``client.evaluate(parameters, config)``; MetricRecord with
  ``loss``, ``num-examples`` and the client's metrics;
- QUERY ``describe`` → the node's ``partition-id``/``num-partitions`` and
  device; QUERY ``prepare`` → ``client.get_properties(config)`` of each
  client the node hosts (their ``num-examples``, and ``prepare-seconds``,
  the time it took), and ``batch-tasks: True``;
- ``train.batch`` (several TRAIN tasks in one message, see
  :mod:`fedstale.batching`) → each task through the train mods and
  ``client.fit`` in turn, all replies in one
  (:mod:`fedstale.client.batch`). The ``batch-tasks`` answer to
  ``prepare`` is what tells the server it may send them.

**Virtual clients.** When the message names a ``client-id`` (one node hosts
several clients, as in simulation), ``client_fn`` receives a view of the
node's ``Context`` whose ``node_config`` says ``partition-id = client-id``
and ``num-partitions = num-clients``, and whose ``state`` is that client's
own RecordDict (stored in the node's state under ``client.<id>.``). A
NumPyClient written for one-client-per-node Flower therefore works as is,
and per-client state stays with its client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from ..batching import CAPABILITY_KEY
from ..packing import CAPABILITY_KEY as PACKING_KEY
from ..packing import packed_arrays_mod
from .batch import batch_handler, with_mods
from .training import pick_device

ClientFn = Callable[[Context], NumPyClient]
STATE_PREFIX = "client."


def client_context(context: Context, client_id: int, num_clients: int) -> Context:
    """The view of ``context`` seen by virtual client ``client_id``."""
    prefix = f"{STATE_PREFIX}{client_id}."
    state = RecordDict(
        {k[len(prefix) :]: v for k, v in context.state.items() if k.startswith(prefix)}
    )
    node_config = dict(context.node_config)
    node_config.update({"partition-id": client_id, "num-partitions": num_clients})
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=node_config,
        state=state,
        run_config=context.run_config,
    )


def store_client_state(context: Context, client_id: int, view: Context) -> None:
    """Write a virtual client's state back into the node's ``context.state``."""
    prefix = f"{STATE_PREFIX}{client_id}."
    for key in [k for k in context.state.keys() if k.startswith(prefix)]:
        del context.state[key]
    for key, record in view.state.items():
        context.state[prefix + key] = record


def _config_of(message: Message) -> dict[str, Any]:
    records = message.content.config_records
    return dict(next(iter(records.values()))) if records else {}


def _numeric(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """Keep the metrics a MetricRecord accepts (bools become ints)."""
    out: dict[str, int | float] = {}
    for key, value in metrics.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _run_client(
    client_fn: ClientFn,
    message: Message,
    context: Context,
    call: Callable[[NumPyClient, dict[str, Any]], RecordDict],
) -> Message:
    config = _config_of(message)
    if "client-id" in config:
        client_id = int(config["client-id"])
        view = client_context(context, client_id, int(config["num-clients"]))
        content = call(client_fn(view), config)
        store_client_state(context, client_id, view)
    else:
        content = call(client_fn(context), config)
    return Message(content, reply_to=message)


def build_client_app(
    client_fn: ClientFn, mods: list[Mod] | None = None, train_mods: list[Mod] | None = None
) -> ClientApp:
    """Return a ``ClientApp`` that serves ``client_fn``'s NumPyClients.

    ``mods`` wrap every message; ``train_mods`` only TRAIN messages (Flower's
    function-specific mods), e.g. :func:`fedstale.client.attacks.attack_mod`.
    Both wrap each task of a ``train.batch`` message, not the batch: each
    handler is registered with ``mods`` (+ ``train_mods``) as its own
    function-specific mods, which is how Flower applies app-wide mods too.
    """
    # outermost: every handler and mod sees a packed message as it was sent
    app = ClientApp(mods=[packed_arrays_mod])
    mods, train_mods = list(mods or []), list(mods or []) + list(train_mods or [])

    def _train(message: Message, context: Context) -> Message:
        arrays = message.content.array_records
        record = next(iter(arrays.values()))
        keys = list(record.keys())

        def call(client: NumPyClient, config: dict[str, Any]) -> RecordDict:
            started = time.perf_counter()
            params, num_examples, metrics = client.fit(record.to_numpy_ndarrays(), config)
            if len(params) != len(keys):
                raise ValueError(
                    f"fit returned {len(params)} arrays, the model has {len(keys)}"
                )
            out = _numeric(metrics)
            out.update(
                {"num-examples": int(num_examples), "fit-seconds": time.perf_counter() - started}
            )
            reply_arrays = ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in zip(keys, params)}
            )
            return RecordDict({"arrays": reply_arrays, "metrics": MetricRecord(out)})

        return _run_client(client_fn, message, context, call)

    app.train(mods=train_mods)(_train)
    app.train("batch")(batch_handler(with_mods(_train, train_mods)))

    @app.evaluate(mods=mods)
    def _evaluate(message: Message, context: Context) -> Message:
        record = next(iter(message.content.array_records.values()))

        def call(client: NumPyClient, config: dict[str, Any]) -> RecordDict:
            loss, num_examples, metrics = client.evaluate(record.to_numpy_ndarrays(), config)
            out = _numeric(metrics)
            out.update({"loss": float(loss), "num-examples": int(num_examples)})
            return RecordDict({"metrics": MetricRecord(out)})

        return _run_client(client_fn, message, context, call)

    @app.query(mods=mods)
    def _query(message: Message, context: Context) -> Message:
        config = _config_of(message)
        action = config.get("fedstale-action")
        if action == "describe":
            info = {k: context.node_config[k] for k in ("partition-id", "num-partitions") if k in context.node_config}
            info["device"] = str(pick_device())
            return Message(RecordDict({"config": ConfigRecord(info)}), reply_to=message)
        if action == "prepare":
            started = time.perf_counter()
            ids, sizes = [], []
            for client_id in config.get("client-ids", []):
                view = client_context(context, int(client_id), int(config["num-clients"]))
                properties = client_fn(view).get_properties(config)
                if "num-examples" in properties:
                    ids.append(int(client_id))
                    sizes.append(int(properties["num-examples"]))
            reply = ConfigRecord(
                {
                    "client-ids": ids,
                    "num-examples": sizes,
                    "prepare-seconds": time.perf_counter() - started,
                    CAPABILITY_KEY: True,
                    PACKING_KEY: True,
                }
            )
            return Message(RecordDict({"config": reply}), reply_to=message)
        raise ValueError(f"unknown fedstale-action '{action}' (expected describe or prepare)")

    return app
