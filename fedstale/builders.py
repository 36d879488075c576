"""Build the pieces of an experiment from its :class:`~fedstale.config.Config`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from .aggregation.filters import NormBound, ValidationCheck
from .aggregation.optimizers import ServerOptimizer, make_server_optimizer
from .aggregation.privacy import CentralGaussianMechanism
from .aggregation.reducers import Reducer
from .aggregation.staleness import make_staleness_function
from .aggregation.trust import TrustTracker
from .aggregation.vectors import ModelCodec
from .availability import Availability, make_availability
from .client.torch_client import set_torch_threads
from .client.training import evaluate, pick_device
from .config import Config
from .fairness import parse_targets
from .data import synthetic_directives
from .data_setup import (  # noqa: F401  (check_data, partition_spec: re-exported)
    check_data,
    client_held_out_sets,
    data_split,
    partition_spec,
    synthetic_spec,
)
from .models import build_model
from .simulation.adversary import Adversary, choose_malicious
from .simulation.clock import Clock, VirtualClock, WallClock
from .simulation.delays import DelayModel, make_distribution
from .strategies import STRATEGIES, AsyncStrategy, Recorder, SecAggFedBuff, make_selection


def build_clock(config: Config) -> Clock:
    """VirtualClock over the configured delay model, or WallClock."""
    if config.delay.clock == "wall":
        return WallClock()
    speed = config.delay.speed
    params = {
        k: getattr(speed, k)
        for k in ("value", "low", "high", "mean", "sigma", "shape", "scale", "cap")
        if getattr(speed, k) is not None
    }
    delays = DelayModel(
        speed=make_distribution(speed.distribution, **params),
        jitter=config.delay.jitter,
        latency=config.delay.latency,
        bandwidth=config.delay.bandwidth,
        seed=config.run.seed,
    )
    return VirtualClock(delays)


def build_availability(config: Config) -> Availability:
    """The ``availability`` model (``always`` unless set)."""
    a = config.availability
    return make_availability(
        a.model, seed=config.run.seed, mean_online=a.mean_online,
        mean_offline=a.mean_offline, trace=a.trace,
    )


def build_reducer(config: Config) -> Reducer:
    """The buffer reducer named by ``strategy.aggregator`` with its parameters."""
    from .aggregation.pipeline import make_aggregator  # pylint: disable=import-outside-toplevel

    r = config.strategy.robust
    return make_aggregator(
        config.strategy.aggregator,
        f=r.f,
        beta=r.beta,
        multikrum_m=r.multikrum_m,
        clip_norm=r.clip_norm,
        cc_tau=r.cc_tau,
        cc_iterations=r.cc_iterations,
        gm_nu=r.gm_nu,
        gm_iterations=r.gm_iterations,
        bucket_size=r.bucket_size,
        seed=config.run.seed,
    )


def build_trust(config: Config) -> TrustTracker | None:
    """The trust tracker, if ``strategy.trust.enabled``."""
    t = config.strategy.trust
    if not t.enabled:
        return None
    return TrustTracker(t.smoothing, t.quarantine_below, t.recover_above)


def build_adversary(config: Config) -> Adversary | None:
    """The simulation's Byzantine clients, unless ``attack.name`` is none."""
    a = config.attack
    if a.name == "none":
        return None
    malicious = choose_malicious(config.data.num_clients, a.fraction, a.clients, config.run.seed)
    params = {
        "boost": a.boost,
        "scale": a.scale,
        "sigma": a.sigma,
        "target_label": a.target_label,
        "trigger_size": a.trigger_size,
        "poison_fraction": a.poison_fraction,
        "z": a.z,
        "epsilon": a.epsilon,
    }
    return Adversary(a.name, malicious, params, window=config.strategy.concurrency)


def build_central_dp(config: Config) -> CentralGaussianMechanism | None:
    """Server-side DP, if ``privacy.central.enabled``."""
    c = config.privacy.central
    if not c.enabled:
        return None
    return CentralGaussianMechanism(
        noise_multiplier=c.noise_multiplier,
        clipping_norm=c.clipping_norm,
        population_size=config.data.num_clients,
        delta=c.delta,
        sampling=c.sampling,
        seed=config.run.seed,
    )


def make_validation_loss(config: Config) -> Callable[[torch.Tensor], float]:
    """Loss of a flat model vector on the server's validation set."""
    data = data_split(config, validation=True)
    assert data.x_val is not None and data.y_val is not None
    model = build_model(config.model.name, data.spec, private=config.privacy.local.enabled)
    codec = ModelCodec(initial_arrays(config))
    device = pick_device()

    def loss_fn(flat: torch.Tensor) -> float:
        model.load_state_dict(codec.to_state_dict(flat))
        return evaluate(model, data.x_val, data.y_val, device)[0]

    return loss_fn


def build_server_optimizer(config: Config) -> ServerOptimizer:
    """``strategy.server_optimizer`` with η = ``server_lr`` and its parameters."""
    s = config.strategy
    return make_server_optimizer(
        s.server_optimizer,
        lr=s.server_lr,
        momentum=s.server_momentum,
        beta_1=s.adaptive.beta_1,
        beta_2=s.adaptive.beta_2,
        tau=s.adaptive.tau,
    )


def strategy_kwargs(config: Config) -> dict[str, Any]:
    """Constructor arguments specific to the configured strategy."""
    strategy = config.strategy
    optimizer = {"server_optimizer": build_server_optimizer(config)}
    if strategy.name == "fedasync":
        f = strategy.filter
        return optimizer | {
            "alpha": strategy.alpha,
            "norm_bound": None if f.norm_bound is None else NormBound(f.norm_bound, f.norm_window),
            "validation": (
                None
                if f.validation_tolerance is None
                else ValidationCheck(f.validation_tolerance, make_validation_loss(config))
            ),
            "trust_window": strategy.trust.window,
        }
    if strategy.name == "fedavg":
        return optimizer | {"reducer": build_reducer(config)}
    kwargs: dict[str, Any] = optimizer | {
        "buffer_size": strategy.buffer_size,
        "aggregation_delay": strategy.aggregation_delay,
        "min_updates": strategy.min_updates,
        "normalization": strategy.normalization,
        "weight_by_examples": strategy.weight_by_examples,
        "reducer": build_reducer(config),
    }
    if config.privacy.secagg.enabled:
        kwargs.update(
            dropout=config.privacy.secagg.dropout,
            precision_bits=config.privacy.secagg.precision_bits,
            secagg_seed=config.run.seed,
        )
    if strategy.name == "dynamic":
        kwargs.update(
            ema=strategy.dynamic.ema,
            b_min=strategy.dynamic.b_min,
            similarity_exponent=strategy.dynamic.similarity_exponent,
        )
    return kwargs


def build_strategy(config: Config, recorder: Recorder | None = None) -> AsyncStrategy:
    """The configured strategy, with its clock and staleness function."""
    s = config.strategy
    staleness = make_staleness_function(
        s.staleness.name, a=s.staleness.a, b=s.staleness.b, w=s.staleness.w,
        w_per_second=s.staleness.w_per_second,
    )
    cls = SecAggFedBuff if config.privacy.secagg.enabled else STRATEGIES[s.name]
    return cls(
        concurrency=s.concurrency,
        num_clients=config.data.num_clients,
        mode=s.resolved_mode(),
        clock=build_clock(config),
        staleness=staleness,
        max_staleness=s.max_staleness,
        max_staleness_seconds=s.max_staleness_seconds,
        lr_delay_alpha=config.client.lr_delay_alpha,
        eval_every=config.evaluation.every,
        num_evaluate_clients=config.evaluation.federated_clients,
        eval_targets=parse_targets(config.evaluation.targets),
        max_retries=config.comm.max_retries,
        retry_backoff=(config.comm.retry_backoff, config.comm.retry_backoff_max),
        message_ttl=config.comm.message_ttl,
        max_inflight_per_node=config.comm.max_inflight_per_node,
        push_window=config.comm.push_window or None,
        tasks_per_message=config.comm.tasks_per_message,
        batch_seconds=config.comm.batch_seconds,
        poll_interval=config.comm.poll_interval,
        max_poll_interval=config.comm.max_poll_interval,
        seed=config.run.seed,
        trust=build_trust(config),
        adversary=build_adversary(config),
        central_dp=build_central_dp(config),
        recorder=recorder,
        max_participations=(
            config.privacy.local.max_participations if config.privacy.local.enabled else 0
        ),
        fail_fast=config.comm.fail_fast,
        selection=make_selection(
            s.selection,
            config.run.seed,
            epsilon=s.oort.epsilon,
            alpha=s.oort.alpha,
            preferred_duration=s.oort.preferred_duration,
        ),
        availability=build_availability(config),
        **strategy_kwargs(config),
    )


def train_config(config: Config) -> ConfigRecord:
    """What every TRAIN (and EVALUATE) message tells the ClientApp."""
    d, c = config.data, config.client
    record = ConfigRecord(
        {
            "dataset": d.dataset,
            "data-path": d.path,
            "augment": d.augment,
            "test-fraction": d.test_fraction,
            "data-seed": d.seed,
            "partitioner": d.partitioner,
            "dirichlet-alpha": d.alpha,
            "min-partition-size": d.min_partition_size,
            "classes-per-client": d.classes_per_client,
            "model": config.model.name,
            "local-epochs": c.local_epochs,
            "batch-size": c.batch_size,
            "lr": c.lr,
            "momentum": c.momentum,
            "weight-decay": c.weight_decay,
            "optimizer": c.optimizer,
            "patience": c.patience,
            "num-threads": c.num_threads,
            "mixed-precision": c.mixed_precision,
            "server-val-size": d.server_val_size,
            **compression_directives(config),
        }
        | privacy_directives(config)
    )
    record.update(dp_sgd_directives(config))
    synthetic = synthetic_spec(config)
    if synthetic is not None:
        record.update(synthetic_directives(synthetic))
    if config.evaluation.fairness:  # the clients leave their held-out split out of training
        record["held-out"] = config.evaluation.held_out
    return record


def dp_sgd_directives(config: Config) -> dict[str, Any]:
    """The ``dp-*`` keys that turn on DP-SGD in the clients (none unless ``privacy.local.enabled``).

    Read by :meth:`fedstale.client.privacy.DpSettings.from_config`. In
    target-ε mode no ``dp-noise-multiplier`` is sent: each client derives its
    own z from its sampling rate.
    """
    local = config.privacy.local
    if not local.enabled:
        return {}
    directives: dict[str, Any] = {
        "dp-sgd": True,
        "dp-max-participations": local.max_participations,
        "dp-max-grad-norm": local.max_grad_norm,
        "dp-delta": local.delta,
        "dp-accountant": local.accountant,
    }
    if local.target_epsilon is not None:
        directives["dp-target-epsilon"] = local.target_epsilon
    else:
        assert local.noise_multiplier is not None  # config check
        directives["dp-noise-multiplier"] = local.noise_multiplier
    return directives


def privacy_directives(config: Config) -> dict[str, Any]:
    """TRAIN-config keys for the client side of privacy (none when it is off)."""
    central = config.privacy.central
    if central.enabled and central.clipping == "client":
        return {KEY_CLIPPING_NORM: central.clipping_norm}
    return {}


def compression_directives(config: Config) -> dict[str, Any]:
    """The ``compression*`` keys :func:`~fedstale.client.compression.compression_mod` reads.

    Empty when neither ``compression.method`` nor ``compression.quantize``
    is set, so uncompressed runs send nothing new.
    """
    c = config.compression
    if c.method == "none" and c.quantize == "none":
        return {}
    return {
        "compression": c.method,
        "compression-ratio": c.ratio,
        "compression-error-feedback": c.error_feedback,
        "compression-quantize": c.quantize,
    }


def initial_arrays(config: Config) -> ArrayRecord:
    """The initial global model (weights from ``run.seed``)."""
    spec = data_split(config).spec
    model = build_model(
        config.model.name, spec, seed=config.run.seed, private=config.privacy.local.enabled
    )
    return ArrayRecord(model.state_dict())


def make_evaluate_fn(config: Config) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Centralized evaluation on the held-out test set: ``accuracy`` and ``loss``.

    Under a backdoor attack it adds ``attack-success``: the accuracy on the
    triggered test set (test images of other classes, triggered, labelled
    with the target), i.e. the share the backdoor sends to its target; and
    ``non-target-accuracy``: the clean accuracy on those same images,
    untriggered (the main task where the backdoor does not aim; the overall
    ``accuracy`` also counts the target class, which a backdoor inflates).

    With ``evaluation.fairness`` it adds ``client-accuracy`` and
    ``client-examples``: the accuracy on, and the size of, every client's
    held-out split (lists indexed by client id), which the server rebuilds
    from the ``data`` section as every ClientApp does (in a deployment the
    server needs the dataset for this, as for the test set).
    """
    data = data_split(config)
    model = build_model(config.model.name, data.spec, private=config.privacy.local.enabled)
    device = pick_device()
    set_torch_threads(config.client.num_threads)
    backdoor = None
    if config.attack.name == "backdoor":
        from .data.backdoor import backdoor_test_set  # pylint: disable=import-outside-toplevel

        backdoor = backdoor_test_set(
            data.x_test, data.y_test, config.attack.target_label, config.attack.trigger_size
        )
        keep = data.y_test != config.attack.target_label
        others = (data.x_test[keep], data.y_test[keep])
    held_out = client_held_out_sets(config) if config.evaluation.fairness else []

    def evaluate_fn(version: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(model, data.x_test, data.y_test, device)
        record = MetricRecord({"accuracy": accuracy, "loss": loss})
        if backdoor is not None:
            record["attack-success"] = evaluate(model, backdoor[0], backdoor[1], device)[1]
            record["non-target-accuracy"] = evaluate(model, *others, device)[1]
        if held_out:
            record["client-accuracy"] = [evaluate(model, x, y, device)[1] for x, y in held_out]
            record["client-examples"] = [len(y) for _, y in held_out]
        return record

    return evaluate_fn


def run_strategy(
    strategy: AsyncStrategy,
    grid: Grid,
    config: Config,
    arrays: ArrayRecord | None = None,
    resume: dict[str, Any] | None = None,
) -> Result:
    """``strategy.start(...)`` with everything else the config says.

    The initial model (``arrays``, default from ``run.seed``), the stop
    conditions, the reply timeout, the clients' config, the centralized
    evaluation on the held-out test set, and the run state to continue
    from (``resume``, see :mod:`fedstale.resume`).
    """
    return strategy.start(
        grid=grid,
        initial_arrays=arrays if arrays is not None else initial_arrays(config),
        num_rounds=config.stop.num_updates,
        timeout=config.comm.timeout,
        train_config=train_config(config),
        evaluate_config=train_config(config),
        evaluate_fn=make_evaluate_fn(config),
        max_virtual_time=config.stop.max_virtual_time,
        target_accuracy=config.stop.target_accuracy,
        resume=resume,
    )


def num_parameters(arrays: ArrayRecord) -> int:
    """Number of scalars in ``arrays``."""
    return int(sum(torch.from_numpy(a.numpy()).numel() for a in arrays.values()))
