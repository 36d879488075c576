"""Client availability: the models' intervals, the pool's filter, and hand-made timelines in a run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fedstale.availability import (
    AlwaysOnline,
    OnOff,
    Trace,
    TraceError,
    make_availability,
    read_trace,
)
from fedstale.config import ConfigError
from fedstale.strategies.pool import ClientPool
from fedstale.strategies.selection import RoundRobin
from tests.helpers import TINY_OVERRIDES, config, run


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# The models
# --------------------------------------------------------------------------


def test_trace_reads_merges_and_answers(tmp_path):
    """Client 0: [0, 2) ∪ [1, 3) = [0, 3) and [5, 6); client 2: [4, 8); client 1 never."""
    path = _write(tmp_path / "t.csv", "client_id,start,end\n0,0,2\n2,4,8\n0,5,6\n0,1,3\n")
    assert read_trace(path) == {0: [(0.0, 3.0), (5.0, 6.0)], 2: [(4.0, 8.0)]}
    trace = Trace.from_csv(path)
    assert [trace.is_online(0, t) for t in (0.0, 2.9, 3.0, 4.0, 5.0, 6.0)] == [
        True, True, False, False, True, False,
    ]
    assert trace.offline_after(0, 1.0) == 3.0 and trace.offline_after(0, 5.5) == 6.0
    assert trace.offline_after(0, 4.0) == 4.0  # offline now
    assert trace.next_online(0, 3.5) == 5.0 and trace.next_online(0, 1.0) == 1.0
    assert trace.next_online(0, 6.0) == math.inf  # no interval left
    assert not trace.is_online(1, 0.0) and trace.next_online(1, 0.0) == math.inf
    assert trace.next_online(2, 0.0) == 4.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("client,start,end\n0,0,1\n", "header must be client_id,start,end"),
        ("client_id,start,end\n0,2,1\n", ":2: needs client_id >= 0 and start < end"),
        ("client_id,start,end\n0,0,1\nx,0,1\n", ":3: expected client_id,start,end"),
    ],
)
def test_bad_traces(tmp_path, text, message):
    with pytest.raises(TraceError, match=message):
        read_trace(_write(tmp_path / "t.csv", text))
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "missing.csv")


def test_on_off_draws_each_client_from_its_own_generator():
    """Client 3, seed 5: starts online iff u < 60/80, then Exp(60) online / Exp(20) offline periods."""
    model = OnOff(mean_online=60.0, mean_offline=20.0, seed=5)
    rng = np.random.default_rng([5, 7, 3])
    start = 0.0 if rng.random() < 0.75 else rng.exponential(20.0)
    expected = []
    for _ in range(4):
        end = start + rng.exponential(60.0)
        expected.append((start, end))
        start = end + rng.exponential(20.0)
    probe = expected[2][0] + 1e-9
    assert model.is_online(3, probe) and model.offline_after(3, probe) == expected[2][1]
    assert model.next_online(3, expected[1][1]) == expected[2][0]
    assert [i for i, _ in zip(model.intervals(3), range(4))] == expected
    # another client or another order of questions draws nothing differently
    other = OnOff(60.0, 20.0, seed=5)
    other.is_online(1, 500.0)
    assert [i for i, _ in zip(other.intervals(3), range(4))] == expected


def test_always_and_the_registry():
    always = make_availability("always")
    assert isinstance(always, AlwaysOnline)
    assert always.is_online(0, 1e9) and always.offline_after(0, 5.0) == math.inf
    assert always.next_online(0, 5.0) == 5.0
    with pytest.raises(ValueError, match="unknown availability model 'sometimes'"):
        make_availability("sometimes")


def test_the_pool_dispatches_only_online_clients():
    """Online: 0 on [0, 10), 1 on [0, 1), 2 on [2, 10), 3 never; round robin picks among the online."""
    trace = Trace({0: [(0, 10)], 1: [(0, 1)], 2: [(2, 10)]})
    pool = ClientPool(RoundRobin(), availability=trace)
    pool.populate(4)
    assert pool.offline(0.0) == {2, 3}
    assert pool.select(4, now=0.0) == [0, 1]
    for client in (0, 1):
        pool.start_task(client)
    assert pool.next_online(0.5) == 2.0  # client 2; 3 never comes
    pool.task_ended(1)
    pool.on_failure(1, "x")  # 1 is first in line, but offline at t = 1.5
    assert pool.select(2, now=1.5) == [] and pool.retry_first == [1]
    assert pool.select(2, now=2.0) == [2] and pool.retry_first == [1]
    pool.start_task(2)
    assert pool.next_online(2.0) == math.inf  # 1 and 3 never again


# --------------------------------------------------------------------------
# In a run
# --------------------------------------------------------------------------

FIXED_DELAYS = {
    "delay.speed.distribution": "constant",
    "delay.speed.value": 0.01,
    "delay.speed.shape": None,
    "delay.speed.scale": None,
    "delay.speed.cap": None,
    "delay.jitter": 0.0,
}


def test_a_hand_made_trace_timeline(tmp_path):
    """Clients 1 and 2 online [0, 100), client 0 on [0, 0.01) and [200, 300), client 3 from t = 3,
    4 and 5 never (C = 3).

    At t = 0 only 0, 1 and 2 are online: client 0's first task cannot finish by 0.01 (latency
    alone is 0.1 s), so it is lost then, and client 0 is not seen again before t = 200. Client 3
    is dispatched at exactly t = 3 (a slot is free: three clients for three slots, one gone).
    4 and 5 never train. Every task of 1, 2 and 3 is accepted.
    """
    trace = _write(
        tmp_path / "trace.csv",
        "client_id,start,end\n0,0,0.01\n0,200,300\n1,0,100\n2,0,100\n3,3,100\n",
    )
    cfg = config(**{**TINY_OVERRIDES, **FIXED_DELAYS, **{
        "availability.model": "trace", "availability.trace": str(trace),
    }})
    _, strategy, recorder = run(cfg)
    rows = recorder.updates
    lost = [r for r in rows if r["client_id"] == 0]
    assert len(lost) == 1
    assert lost[0]["reason"] == "offline at t=0.01" and lost[0]["accepted"] is False
    assert lost[0]["dispatch_time"] == 0.0 and lost[0]["arrival_time"] == 0.01
    assert {r["client_id"] for r in rows} == {0, 1, 2, 3}
    first_of_3 = min((r for r in rows if r["client_id"] == 3), key=lambda r: r["task_id"])
    assert first_of_3["dispatch_time"] == 3.0
    assert all(r["accepted"] for r in rows if r["client_id"] != 0)
    assert recorder.evaluations[-1]["dropped"] == 1
    assert strategy.clock.now < 100


def test_on_off_rows_respect_the_model():
    """Every dispatch finds its client online; accepted tasks end before it goes offline,
    lost ones end exactly when it does."""
    cfg = config(**{**TINY_OVERRIDES, **FIXED_DELAYS, **{
        "availability.model": "on_off", "availability.mean_online": 1.5,
        "availability.mean_offline": 1.0,
    }})
    _, strategy, recorder = run(cfg)
    model = strategy.availability
    assert isinstance(model, OnOff) and (model.mean_online, model.seed) == (1.5, cfg.run.seed)
    lost = 0
    for row in recorder.updates:
        client, start, end = row["client_id"], row["dispatch_time"], row["arrival_time"]
        assert model.is_online(client, start)
        offline = model.offline_after(client, start)
        if row["reason"].startswith("offline"):
            lost += 1
            assert end == offline and row["reason"] == f"offline at t={offline:.6g}"
        else:
            assert end <= offline
    assert lost > 0 and recorder.evaluations[-1]["dropped"] == lost


def test_availability_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="availability.trace: model 'trace' needs a CSV"):
        config(**{"availability.model": "trace"})
    with pytest.raises(ConfigError, match="availability.trace: trace file .* does not exist"):
        config(**{"availability.model": "trace", "availability.trace": str(tmp_path / "no.csv")})
    bad = _write(tmp_path / "bad.csv", "id,start,end\n")
    with pytest.raises(ConfigError, match="availability.trace: .*header must be client_id,start,end"):
        config(**{"availability.model": "trace", "availability.trace": str(bad)})
    with pytest.raises(ConfigError, match="availability.model: 'on_off' is simulated on the virtual clock"):
        config(**{"availability.model": "on_off", "delay.clock": "wall"})
    with pytest.raises(ConfigError, match="availability.trace: only read with availability.model: trace"):
        config(**{"availability.trace": str(bad)})
    with pytest.raises(ConfigError, match=r"availability.model: 'onoff' is not one of .*did you mean 'on_off'"):
        config(**{"availability.model": "onoff"})
