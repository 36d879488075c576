"""Rules that involve several fields (run once every field is valid on its own).

Each check returns its problems, one line each, naming the field to change;
:func:`cross_checks` runs them all so that every problem is reported at once.
``strategy.aggregator`` is checked against the aggregation registries
(:func:`fedstale.aggregation.pipeline.make_aggregator`), not against the
builders, which import the strategies.
"""

from __future__ import annotations

import importlib.util

from ..fairness import parse_targets
from .fields import to_dict
from .schema import SPEED_PARAM_NAMES, SPEED_PARAMETERS, Config, SpeedConfig


def cross_checks(config: Config, explicit: set[str]) -> list[str]:
    """Rules that involve several fields."""
    problems = []
    strategy = config.strategy
    mode = strategy.resolved_mode()
    if strategy.name == "fedavg" and mode != "sync":
        problems.append(
            "strategy.mode: fedavg is synchronous; use mode: sync (or auto), "
            "or strategy.name: fedbuff for buffered asynchronous aggregation"
        )
    if strategy.name == "fedasync" and mode != "async":
        problems.append(
            "strategy.mode: fedasync is asynchronous; use mode: async (or auto), "
            "or strategy.name: fedbuff with mode: sync for a synchronous baseline"
        )
    if strategy.concurrency > config.data.num_clients:
        problems.append(
            f"strategy.concurrency: {strategy.concurrency} clients at once needs at "
            f"least as many clients; data.num_clients is {config.data.num_clients}"
        )
    if config.evaluation.federated_clients > config.data.num_clients:
        problems.append(
            f"evaluation.federated_clients: must be <= data.num_clients "
            f"({config.data.num_clients}), got {config.evaluation.federated_clients}"
        )
    problems += _target_checks(config.evaluation.targets)
    if config.data.partitioner == "pathological" and config.data.classes_per_client > 10:
        problems.append("data.classes_per_client: digits has 10 classes; use 1..10")
    problems += _speed_checks(config.delay.speed, explicit)
    problems += _robustness_checks(config)
    problems += _attack_checks(config)
    problems += _data_model_checks(config)
    problems += _synthetic_checks(config)
    problems += _privacy_checks(config)
    problems += _resume_checks(config)
    problems += _tracker_checks(config)
    problems += _availability_checks(config, explicit)
    problems += _timing_checks(config, explicit)
    return problems


def _timing_checks(config: Config, explicit: set[str]) -> list[str]:
    """aggregation_delay, min_updates and the per-second decay fit the strategy."""
    strategy, problems = config.strategy, []
    secagg = config.privacy.secagg.enabled
    if strategy.aggregation_delay is not None:
        if strategy.name not in ("fedbuff", "dynamic") or strategy.resolved_mode() != "async":
            problems.append(
                "strategy.aggregation_delay: flushes a FedBuff buffer early; use strategy.name: "
                f"fedbuff or dynamic in async mode (got {strategy.name}, "
                f"{strategy.resolved_mode()})"
            )
        if secagg:
            problems.append(
                "strategy.aggregation_delay: masks cancel only over a whole secure group; "
                "unset it (none) with privacy.secagg"
            )
    elif "strategy.min_updates" in explicit and strategy.min_updates != 1:
        problems.append("strategy.min_updates: only used with strategy.aggregation_delay; set both")
    if strategy.min_updates > strategy.buffer_size:
        problems.append(
            f"strategy.min_updates: must be <= strategy.buffer_size ({strategy.buffer_size}), "
            f"got {strategy.min_updates}"
        )
    if strategy.staleness.w_per_second != 1.0:
        if strategy.staleness.name != "exponential":
            problems.append(
                "strategy.staleness.w_per_second: a decay of the exponential function; set "
                f"strategy.staleness.name: exponential (got {strategy.staleness.name})"
            )
        if strategy.name == "dynamic" or secagg:
            problems.append(
                "strategy.staleness.w_per_second: dynamic staleness and secure aggregation "
                "weigh by versions only; leave it at 1"
            )
    return problems


def _availability_checks(config: Config, explicit: set[str]) -> list[str]:
    """A simulated availability model needs the virtual clock; a trace must be readable."""
    # pylint: disable=import-outside-toplevel
    from ..availability.trace import TraceError, read_trace

    availability, problems = config.availability, []
    if availability.model != "always" and config.delay.clock != "virtual":
        problems.append(
            f"availability.model: '{availability.model}' is simulated on the virtual clock; "
            "use delay.clock: virtual, or availability.model: always (in deployment a "
            "SuperNode that is down shows up as failed tasks)"
        )
    if availability.model == "trace":
        if not availability.trace:
            problems.append("availability.trace: model 'trace' needs a CSV file of client_id,start,end")
        else:
            try:
                read_trace(availability.trace)
            except TraceError as err:
                problems.append(f"availability.trace: {err}")
    elif "availability.trace" in explicit and availability.trace:
        problems.append(
            f"availability.trace: only read with availability.model: trace (got model "
            f"'{availability.model}')"
        )
    return problems


def _tracker_checks(config: Config) -> list[str]:
    """A tracker whose package is missing would fail at the first row: say so now.

    Each tracker's package has the tracker's name (``tensorboard``,
    ``mlflow``), and so has the extra that installs it.
    """
    name = config.output.tracker
    if name != "none" and importlib.util.find_spec(name) is None:
        return [f"output.tracker: {name} needs the {name} package; pip install 'fedstale[{name}]'"]
    return []


def _resume_checks(config: Config) -> list[str]:
    """What a resumed run cannot carry over from the interrupted one."""
    if not config.run.resume:
        return []
    problems = []
    if config.privacy.local.enabled:
        problems.append(
            "run.resume: each client's DP-SGD accountant lives in its SuperNode's Context, "
            "which a new run does not have, so the ε reported after resuming would be too "
            "low; start a new run (run.resume: '') with privacy.local"
        )
    if config.privacy.secagg.enabled:
        problems.append(
            "run.resume: secure-aggregation groups in flight cannot be re-formed with the "
            "masks their members already applied; start a new run (run.resume: '') with "
            "privacy.secagg"
        )
    return problems


def _privacy_checks(config: Config) -> list[str]:
    """DP, secure aggregation and compression fit the strategy and each other."""
    privacy, strategy, problems = config.privacy, config.strategy, []
    local, central, secagg = privacy.local, privacy.central, privacy.secagg
    if local.enabled:
        if local.target_epsilon is None and local.noise_multiplier is None:
            problems.append(
                "privacy.local.noise_multiplier: set it or privacy.local.target_epsilon"
            )
        if local.target_epsilon is not None and local.max_participations == 0:
            problems.append(
                "privacy.local.max_participations: target_epsilon is a budget over a "
                "known number of local updates; set max_participations (e.g. 10)"
            )
        if config.client.mixed_precision != "none":
            problems.append(
                f"client.mixed_precision: '{config.client.mixed_precision}' cannot be used "
                "with privacy.local (DP-SGD clips per-example gradients to C in float32); "
                "set client.mixed_precision: none"
            )
        if config.model.name == "resnet18":
            problems.append(
                "privacy.local: Opacus cannot compute per-example gradients through "
                "torchvision's resnet18 (its residual add is in place); use model.name: "
                "resnet8 or resnet20 with DP-SGD"
            )
    if central.enabled:
        if strategy.aggregator != "mean" and not central.allow_robust:
            problems.append(
                f"privacy.central: noise z·C/K is calibrated to a mean; strategy.aggregator "
                f"'{strategy.aggregator}' has another sensitivity. Use aggregator: mean, or "
                "set privacy.central.allow_robust: true to accept a guarantee that does not hold"
            )
        if strategy.name == "fedavg":
            problems.append(
                "privacy.central: fedavg weights updates by examples, so one client can move "
                "the mean by more than C/K; use strategy.name: fedbuff with mode: sync"
            )
        if strategy.normalization == "weight_sum" and strategy.name in ("fedbuff", "dynamic"):
            problems.append(
                "strategy.normalization: weight_sum divides by Σ s(τ) < K, so the sensitivity "
                "exceeds C/K; use normalization: count with privacy.central"
            )
        if strategy.weight_by_examples:
            problems.append(
                "strategy.weight_by_examples: weights above 1 break the sensitivity C/K of "
                "privacy.central; set it to false"
            )
        if strategy.trust.enabled and not central.allow_robust:
            problems.append(
                "strategy.trust: trust weights are computed from the clients' updates, so "
                "they leak what privacy.central protects; disable trust or set "
                "privacy.central.allow_robust: true"
            )
        if secagg.enabled and central.clipping != "client":
            problems.append(
                "privacy.central.clipping: with privacy.secagg the server never sees an "
                "update to clip; use clipping: client"
            )
    if secagg.enabled:
        if strategy.name != "fedbuff":
            problems.append(
                "privacy.secagg: masks cancel only in a buffer sum; use strategy.name: fedbuff "
                f"(got {strategy.name})"
            )
        if strategy.aggregator != "mean":
            problems.append(
                f"privacy.secagg: the server sees only the buffer sum, so per-update rule "
                f"'{strategy.aggregator}' cannot run; use strategy.aggregator: mean"
            )
        if strategy.trust.enabled:
            problems.append(
                "privacy.secagg: trust scores individual updates, which secure aggregation "
                "hides; set strategy.trust.enabled: false"
            )
        if strategy.weight_by_examples:
            problems.append(
                "privacy.secagg: masked updates cannot be weighted one by one; set "
                "strategy.weight_by_examples: false"
            )
        if config.compression.method != "none" or config.compression.quantize != "none":
            problems.append(
                "compression: masks cancel only on dense fixed-point updates; set "
                "compression.method: none and compression.quantize: none with privacy.secagg"
            )
        if config.attack.name in ("alie", "ipm"):
            problems.append(
                f"attack.name: '{config.attack.name}' is applied by the server to plaintext "
                "updates, which privacy.secagg hides; use a client-side attack"
            )
    return problems


TEXT_MODELS = ("bert_lora",)
"""Models that take token ids (``data.dataset: text``); every other takes images."""


def _data_model_checks(config: Config) -> list[str]:
    """Text goes with a text model, images with an image model."""
    text_data = config.data.dataset == "text"
    text_model = config.model.name in TEXT_MODELS
    if text_data and not text_model:
        return [f"model.name: data.dataset text needs a text model ({', '.join(TEXT_MODELS)})"]
    if text_model and not text_data:
        return [f"model.name: '{config.model.name}' takes token ids; set data.dataset: text"]
    if text_data and config.attack.name == "backdoor":
        return ["attack.name: 'backdoor' stamps a pixel trigger on images; not available for text"]
    return []


FLAT_MODELS = ("logreg", "mlp")
"""Models that take flat feature vectors (those of ``data.dataset: synthetic``)."""

SYNTHETIC_NAMES = ("synthetic", "synthetic_iid")


def _synthetic_checks(config: Config) -> list[str]:
    """A synthetic dataset generates each client's data: no partitioner, path or image model.

    ``data.partitioner`` at its default (dirichlet) and the partitioners'
    fields are ignored; another partitioner is an error.
    """
    d = config.data
    if d.dataset not in SYNTHETIC_NAMES:
        return []
    problems = []
    if d.partitioner != "dirichlet":  # the default, which (with its fields) is ignored
        problems.append(
            f"data.partitioner: '{d.partitioner}' does not apply to data.dataset {d.dataset} (each client's data is "
            "generated from data.seed and data.synthetic; data.synthetic.alpha/beta set the "
            "heterogeneity); remove data.partitioner (or set it to dirichlet, which is ignored)"
        )
    if d.path:
        problems.append(f"data.path: data.dataset {d.dataset} is generated; leave data.path empty")
    if config.model.name not in FLAT_MODELS:
        problems.append(
            f"model.name: data.dataset {d.dataset} gives 60 flat features; use one of "
            f"{', '.join(FLAT_MODELS)} (logreg: FedProx's multinomial logistic regression)"
        )
    s = d.synthetic
    if s.max_samples < s.min_samples:
        problems.append(
            f"data.synthetic.max_samples: must be >= data.synthetic.min_samples ({s.min_samples}), "
            f"got {s.max_samples}"
        )
    if config.evaluation.fairness and s.min_samples < 2:
        problems.append(
            "data.synthetic.min_samples: evaluation.fairness holds out part of every client's "
            "examples; set it to at least 2"
        )
    if config.attack.name == "backdoor":
        problems.append(
            f"attack.name: 'backdoor' stamps a pixel trigger on images; not available for {d.dataset}"
        )
    return problems


def _robustness_checks(config: Config) -> list[str]:
    """The aggregator pipeline, trust and filters fit the strategy."""
    # pylint: disable=import-outside-toplevel
    from ..aggregation.pipeline import make_aggregator

    strategy, problems = config.strategy, []
    if strategy.name == "fedasync" and strategy.aggregator != "mean":
        problems.append(
            "strategy.aggregator: fedasync merges one update at a time and cannot use "
            f"'{strategy.aggregator}'; use strategy.filter and strategy.trust, or "
            "strategy.name: fedbuff for robust buffer reducers"
        )
    else:
        try:
            required = make_aggregator(
                strategy.aggregator, **to_dict(strategy.robust), seed=config.run.seed
            ).required_updates()
        except ValueError as err:
            problems.append(f"strategy.aggregator: {err}")
        else:
            sync = strategy.resolved_mode() == "sync"
            size = strategy.concurrency if sync else strategy.buffer_size
            field_name = "strategy.concurrency" if sync else "strategy.buffer_size"
            if size < required:
                problems.append(
                    f"{field_name}: '{strategy.aggregator}' with strategy.robust.f = "
                    f"{strategy.robust.f} needs at least {required} updates per "
                    f"aggregation, got {size}"
                )
    filters = strategy.filter
    if strategy.name != "fedasync" and (
        filters.norm_bound is not None or filters.validation_tolerance is not None
    ):
        problems.append(
            "strategy.filter: per-update filters apply to fedasync; fedbuff and fedavg "
            "use strategy.aggregator (robust reducers) instead"
        )
    if filters.validation_tolerance is not None and config.data.server_val_size == 0:
        problems.append(
            "strategy.filter.validation_tolerance: needs a server validation set; "
            "set data.server_val_size (e.g. 100)"
        )
    trust = strategy.trust
    if trust.recover_above < trust.quarantine_below:
        problems.append(
            f"strategy.trust.recover_above: must be >= quarantine_below "
            f"({trust.quarantine_below}), got {trust.recover_above}"
        )
    return problems


def _target_checks(text: str) -> list[str]:
    try:
        parse_targets(text)
    except ValueError as exc:
        return [f"evaluation.targets: {exc}"]
    return []


def _attack_checks(config: Config) -> list[str]:
    attack, problems = config.attack, []
    if attack.clients.strip():
        try:
            ids = [int(x) for x in attack.clients.split(",") if x.strip()]
        except ValueError:
            return [f"attack.clients: expected comma-separated client ids, got '{attack.clients}'"]
        bad = [i for i in ids if not 0 <= i < config.data.num_clients]
        if bad:
            problems.append(
                f"attack.clients: ids {bad} are outside 0..{config.data.num_clients - 1}"
            )
    if attack.name == "backdoor" and attack.target_label >= 10:
        problems.append("attack.target_label: digits has labels 0..9")
    return problems


def _speed_checks(speed: SpeedConfig, explicit: set[str]) -> list[str]:
    required, optional = SPEED_PARAMETERS[speed.distribution]
    problems = []
    for param in required:
        if getattr(speed, param) is None:
            problems.append(
                f"delay.speed.{param}: required by distribution '{speed.distribution}' "
                f"(it uses {', '.join(required + optional)})"
            )
    used = set(required + optional)
    for param in SPEED_PARAM_NAMES:
        if param not in used and f"delay.speed.{param}" in explicit and getattr(speed, param) is not None:
            problems.append(
                f"delay.speed.{param}: not a parameter of distribution "
                f"'{speed.distribution}' (it uses {', '.join(required + optional)})"
            )
    if speed.distribution == "uniform" and None not in (speed.low, speed.high):
        if speed.low >= speed.high:  # type: ignore[operator]
            problems.append(
                f"delay.speed.high: must be > delay.speed.low ({speed.low}), got {speed.high}"
            )
    return problems
