"""ServerApp of the baseline: Flower's own ``FedAvg.start()``, unchanged.

It trains with fedstale's ClientApp (``fedstale.client_app:app``) and sends
exactly the TRAIN config fedstale sends (``fedstale.builders.train_config``
of the same experiment), so that ``simulations/bench_overhead.py`` can
compare fedstale's event loop with Flower's round loop on the same local
work. Flower's FedAvg does not name a client in its messages, so each
SuperNode trains its own partition (``partition-id`` of ``num-partitions``,
i.e. one client per SuperNode).

Timed sections (written as JSON to the run config's ``timing-file``):

- ``warmup_seconds``: optional start-up outside the strategy: a QUERY to every
  node so that each ClientApp worker imports torch and loads its data
  partition before the clock starts (fedstale's loop does the same work in
  its start-up, which ``metrics.csv``'s ``wall_time`` also excludes);
- ``strategy_seconds``: ``FedAvg.start()`` itself, ``num-rounds`` rounds of
  ``clients-per-round`` clients, no federated or centralized evaluation.

The ``FedAvg`` subclass below only observes the replies (count, examples,
the clients' ``fit-seconds``); it changes nothing in sampling, messaging or
aggregation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

import fedstale
from fedstale.builders import initial_arrays, train_config
from fedstale.config import load_config
from fedstale.progress import log_line
from fedstale.strategies.placement import ACTION_KEY

app = ServerApp()

DEFAULT_CONFIG = Path(fedstale.__file__).resolve().parent.parent / "configs" / "default.yaml"


def parse_overrides(text: str) -> dict[str, Any]:
    """``"a.b=1 c.d='x'"`` → ``{"a.b": 1, "c.d": "x"}`` (YAML values)."""
    out = {}
    for item in text.split():
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override '{item}' must look like dotted.name=value")
        out[key] = yaml.safe_load(raw)
    return out


class ObservedFedAvg(FedAvg):
    """Flower's FedAvg; counts the training replies it aggregates."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.updates = 0
        self.failures = 0
        self.fit_seconds = 0.0
        self.examples = 0

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):  # type: ignore[no-untyped-def]
        replies = list(replies)
        for reply in replies:
            if reply.has_error():
                self.failures += 1
                continue
            self.updates += 1
            metrics = next(iter(reply.content.metric_records.values()))
            self.fit_seconds += float(metrics.get("fit-seconds", 0.0))  # type: ignore[arg-type]
            self.examples += int(metrics.get("num-examples", 0))  # type: ignore[arg-type]
        return super().aggregate_train(server_round, replies)


def query_all(grid: Grid, contents: dict[int, ConfigRecord], timeout: float) -> dict[int, Any]:
    """One QUERY per node; the ConfigRecord of each reply, by node."""
    messages = [
        Message(RecordDict({"config": c}), dst_node_id=n, message_type=MessageType.QUERY)
        for n, c in contents.items()
    ]
    ids = list(grid.push_messages(messages))
    node_of = dict(zip(ids, contents))
    pending, answers = set(i for i in ids if i), {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            pending.discard(reply.metadata.reply_to_message_id)
            if reply.has_content() and "config" in reply.content:
                answers[node_of[reply.metadata.reply_to_message_id]] = reply.content["config"]
        if pending:
            time.sleep(0.01)
    return answers


def warm_up(grid: Grid, config: ConfigRecord, timeout: float) -> None:
    """Have every node import its ClientApp and load its partition."""
    nodes = sorted(grid.get_node_ids())
    described = query_all(grid, {n: ConfigRecord({ACTION_KEY: "describe"}) for n in nodes}, timeout)
    prepare = {}
    for node, info in described.items():
        content = ConfigRecord(dict(config))
        content[ACTION_KEY] = "prepare"
        content["client-ids"] = [int(info["partition-id"])]
        content["num-clients"] = int(info["num-partitions"])
        prepare[node] = content
    query_all(grid, prepare, timeout)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run Flower's FedAvg for ``num-rounds`` rounds and record its wall time."""
    started = time.monotonic()
    rc = context.run_config
    path = str(rc.get("config", "")) or str(DEFAULT_CONFIG)
    experiment = load_config(path, parse_overrides(str(rc.get("overrides", ""))))
    per_round = int(rc["clients-per-round"])
    min_nodes = int(rc.get("min-nodes", 0)) or per_round
    timeout = float(rc.get("timeout", 600.0))
    config = train_config(experiment)
    arrays = initial_arrays(experiment)

    while len(list(grid.get_node_ids())) < min_nodes:
        time.sleep(0.5)
    num_nodes = len(list(grid.get_node_ids()))
    warmup_started = time.monotonic()
    if bool(rc.get("warmup", True)):
        warm_up(grid, config, timeout)
    warmup_seconds = time.monotonic() - warmup_started

    strategy = ObservedFedAvg(
        fraction_train=min(1.0, per_round / num_nodes),
        fraction_evaluate=0.0,
        min_train_nodes=per_round,
        min_available_nodes=min_nodes,
    )
    strategy_started = time.monotonic()
    strategy.start(
        grid=grid,
        initial_arrays=arrays,
        num_rounds=int(rc["num-rounds"]),
        timeout=timeout,
        train_config=config,
    )
    strategy_seconds = time.monotonic() - strategy_started
    timings = {
        "strategy_seconds": strategy_seconds,
        "warmup_seconds": warmup_seconds,
        "main_seconds": time.monotonic() - started,
        "num_nodes": num_nodes,
        "rounds": int(rc["num-rounds"]),
        "clients_per_round": per_round,
        "updates": strategy.updates,
        "failures": strategy.failures,
        "fit_seconds": strategy.fit_seconds,
        "examples": strategy.examples,
        "local_epochs": experiment.client.local_epochs,
    }
    log_line("FedAvg baseline: %s", json.dumps(timings))
    out = str(rc.get("timing-file", ""))
    if out:
        Path(out).write_text(json.dumps(timings, indent=2), encoding="utf-8")
