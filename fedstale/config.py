"""Experiment configuration: a typed schema, YAML loading, overrides, validation.

An experiment is a YAML file (see ``configs/``) with the sections below.
Every field has a built-in default, so a YAML file only states what differs.
The effective value of a field is, from strongest to weakest:

1. ``flwr run . --run-config "strategy.concurrency=5"`` (any field, by its
   dotted name);
2. a value in ``[tool.flwr.app.config]`` of ``pyproject.toml`` that differs
   from the built-in default (that table lists every field with its
   built-in default);
3. the YAML file named by the run-config key ``config``;
4. the built-in default.

Everything is validated before any work starts; :class:`ConfigError` lists
every bad field, one line each, naming the field and what it accepts.

``python -m fedstale.config CONFIG [key=value ...]`` prints the resolved
configuration or the errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NONE_STRINGS = ("none", "null", "")


class ConfigError(ValueError):
    """An invalid experiment configuration; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _f(default: Any, help: str, **rules: Any) -> Any:  # pylint: disable=redefined-builtin
    """A schema field: its default, its help text and its validation rules.

    Rules: ``choices`` (allowed values), ``ge``/``gt``/``le``/``lt`` (bounds)
    and ``optional`` (None allowed, written ``none`` in YAML/TOML).
    """
    return field(default=default, metadata={"help": help, **rules})


def _section(cls: type) -> Any:
    return field(default_factory=cls)


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------


@dataclass
class RunConfig:
    """``run``: naming and seeding."""

    name: str = _f("", "results go to <output_dir>/<name>/; empty: the YAML file's stem")
    seed: int = _f(0, "seed of client selection, delays and local training", ge=0)
    output_dir: str = _f("results", "folder for results, relative to the working directory")
    resume: str = _f(
        "", "run folder of an interrupted (or finished) run to continue from its checkpoints/resume.pt, e.g. results/default (empty: start a new run)"
    )


def _dataset_names() -> list[str]:
    from .data import dataset_names  # pylint: disable=import-outside-toplevel

    return dataset_names()


@dataclass
class DataConfig:
    """``data``: dataset and how it is split among clients."""

    dataset: str = _f("digits", "dataset name", choices=_dataset_names)
    path: str = _f(
        "", "local copy of the dataset: a datasets.save_to_disk folder, parquet files or a torchvision root (empty: digits from scikit-learn, others from the Hugging Face hub/cache)"
    )
    augment: bool = _f(True, "apply the dataset's training augmentation (cifar: random crop + flip)")
    num_clients: int = _f(20, "number of clients (the simulated population)", ge=1)
    partitioner: str = _f(
        "dirichlet", "flwr-datasets partitioner", choices=("iid", "dirichlet", "pathological")
    )
    alpha: float = _f(0.5, "Dirichlet concentration α (dirichlet)", gt=0)
    min_partition_size: int = _f(10, "fewest examples per client (dirichlet)", ge=0)
    classes_per_client: int = _f(2, "labels per client (pathological)", ge=1)
    test_fraction: float = _f(0.2, "share held out as the server's test set", gt=0, lt=1)
    server_val_size: int = _f(0, "examples of the clients' pool kept by the server for validation", ge=0)
    seed: int = _f(0, "seed of the train/test split and of the partitioning", ge=0)


def _model_names() -> list[str]:
    from .models import MODELS  # pylint: disable=import-outside-toplevel

    return list(MODELS)


@dataclass
class ModelConfig:
    """``model``: the network."""

    name: str = _f("cnn", "model name", choices=_model_names)


@dataclass
class ClientConfig:
    """``client``: local training."""

    local_epochs: int = _f(1, "local epochs per update", ge=1)
    batch_size: int = _f(16, "mini-batch size", ge=1)
    optimizer: str = _f("sgd", "local optimizer (a fresh one per update)", choices=("sgd", "adamw"))
    lr: float = _f(0.05, "learning rate γ0", gt=0)
    momentum: float = _f(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = _f(0.0, "weight decay (SGD's L2 term; AdamW's decoupled decay)", ge=0)
    lr_delay_alpha: float = _f(
        0.0, "α_lr of lr = γ0/(1 + α_lr·τ_last), τ_last the client's last staleness", ge=0
    )
    patience: int = _f(0, "early stopping: epochs without lower loss before stopping (0: off)", ge=0)
    num_threads: int = _f(1, "torch threads per ClientApp process (0: torch's default)", ge=0)
    mixed_precision: str = _f(
        "none",
        "local training's autocast: none (float32), bf16 (bfloat16; CPU or Ampere+ GPU), fp16 (float16 + GradScaler; CUDA only); a client whose device lacks it trains in float32; weights and updates stay float32",
        choices=("none", "bf16", "fp16"),
    )


@dataclass
class StalenessConfig:
    """``strategy.staleness``: the staleness function s(τ)."""

    name: str = _f(
        "polynomial",
        "staleness function",
        choices=("constant", "polynomial", "hinge", "exponential"),
    )
    a: float = _f(0.5, "exponent (polynomial) or slope (hinge)", ge=0)
    b: float = _f(4.0, "staleness tolerated before the hinge decays (hinge)", ge=0)
    w: float = _f(0.98, "per-version decay w of w^τ (exponential)", gt=0, le=1)


@dataclass
class DynamicConfig:
    """``strategy.dynamic``: the dynamic staleness strategy."""

    ema: float = _f(0.9, "β of the running mean staleness τ̄", ge=0, lt=1)
    b_min: float = _f(1.0, "floor of b = max(b_min, τ̄)", gt=0)
    similarity_exponent: float = _f(1.0, "γ of the agreement factor ((1+cos)/2)^γ (0: off)", ge=0)


@dataclass
class RobustConfig:
    """``strategy.robust``: parameters of the robust aggregation pipeline."""

    f: int = _f(1, "Byzantine updates tolerated per aggregation (krum, multi_krum, bulyan, nnm)", ge=0)
    beta: float = _f(0.1, "share trimmed from each end per coordinate (trimmed_mean)", ge=0, lt=0.5)
    multikrum_m: int | None = _f(None, "updates Multi-Krum averages (none: n - f)", ge=1, optional=True)
    clip_norm: float = _f(1.0, "L2 bound of each update (clip)", gt=0)
    cc_tau: float = _f(0.1, "radius τ of centered clipping", gt=0)
    cc_iterations: int = _f(1, "iterations of centered clipping", ge=1)
    gm_nu: float = _f(0.1, "smoothing ν of the geometric median (Weiszfeld)", gt=0)
    gm_iterations: int = _f(3, "Weiszfeld iterations of the geometric median", ge=1)
    bucket_size: int = _f(2, "updates averaged per bucket (bucketing)", ge=1)


@dataclass
class TrustConfig:
    """``strategy.trust``: per-client trust scores with soft quarantine."""

    enabled: bool = _f(False, "score clients and scale their weights by trust")
    smoothing: float = _f(0.5, "λ of T <- λ·T + (1 - λ)·score", ge=0, lt=1)
    quarantine_below: float = _f(0.2, "a client whose trust falls below this is quarantined", ge=0, le=1)
    recover_above: float = _f(0.4, "a quarantined client is released once its trust reaches this", ge=0, le=1)
    window: int = _f(10, "recent accepted updates forming the reference of FedAsync", ge=1)


@dataclass
class FilterConfig:
    """``strategy.filter``: per-update checks before an update is merged."""

    norm_bound: float | None = _f(
        None, "reject updates with ‖Δ‖ > κ · median of recent accepted norms (κ; none: off)", gt=0, optional=True
    )
    norm_window: int = _f(20, "recent accepted updates the norm bound looks at", ge=1)
    validation_tolerance: float | None = _f(
        None,
        "reject an update that raises the server validation loss by more than ε (none: off; needs data.server_val_size)",
        ge=0,
        optional=True,
    )


@dataclass
class StrategyConfig:
    """``strategy``: how updates are merged."""

    name: str = _f(
        "fedbuff", "strategy", choices=("fedasync", "fedbuff", "fedavg", "dynamic")
    )
    mode: str = _f(
        "auto",
        "async or sync (barrier of concurrency clients); auto: sync for fedavg, else async",
        choices=("auto", "async", "sync"),
    )
    concurrency: int = _f(10, "C, clients training at once (async) or per round (sync)", ge=1)
    buffer_size: int = _f(5, "K, updates per server step (fedbuff, dynamic)", ge=1)
    server_lr: float = _f(1.0, "η_g, server learning rate (fedbuff, dynamic)", gt=0)
    server_momentum: float = _f(0.0, "β, server momentum (fedbuff, dynamic)", ge=0, lt=1)
    normalization: str = _f(
        "count",
        "divide the weighted sum by K (count) or by Σ s(τ) (weight_sum)",
        choices=("count", "weight_sum"),
    )
    weight_by_examples: bool = _f(False, "multiply weights by n_i / mean(n) (fedbuff, dynamic)")
    alpha: float = _f(0.6, "mixing α of FedAsync", gt=0, le=1)
    max_staleness: int | None = _f(None, "drop updates staler than this (none: keep all)", ge=0, optional=True)
    aggregator: str = _f(
        "mean",
        "buffer reducer, optionally after pre-aggregators: e.g. median, clip>nnm>trimmed_mean",
    )
    staleness: StalenessConfig = _section(StalenessConfig)
    dynamic: DynamicConfig = _section(DynamicConfig)
    robust: RobustConfig = _section(RobustConfig)
    trust: TrustConfig = _section(TrustConfig)
    filter: FilterConfig = _section(FilterConfig)

    def resolved_mode(self) -> str:
        """``mode`` with ``auto`` resolved."""
        if self.mode != "auto":
            return self.mode
        return "sync" if self.name == "fedavg" else "async"


@dataclass
class SpeedConfig:
    """``delay.speed``: seconds per training example, one draw per client."""

    distribution: str = _f(
        "pareto",
        "distribution of client speeds",
        choices=("constant", "uniform", "exponential", "lognormal", "pareto"),
    )
    value: float | None = _f(None, "seconds per example (constant)", gt=0, optional=True)
    low: float | None = _f(None, "lower bound (uniform)", ge=0, optional=True)
    high: float | None = _f(None, "upper bound (uniform)", gt=0, optional=True)
    mean: float | None = _f(None, "mean (exponential, lognormal)", gt=0, optional=True)
    sigma: float | None = _f(None, "log-scale σ (lognormal)", ge=0, optional=True)
    shape: float | None = _f(1.2, "tail index α (pareto)", gt=0, optional=True)
    scale: float | None = _f(0.005, "minimum x_m (pareto)", gt=0, optional=True)
    cap: float | None = _f(0.5, "largest value (pareto; none: uncapped)", gt=0, optional=True)


@dataclass
class DelayConfig:
    """``delay``: simulated time."""

    clock: str = _f(
        "virtual",
        "virtual (simulated delays, deterministic) or wall (arrival order, deployment)",
        choices=("virtual", "wall"),
    )
    speed: SpeedConfig = _section(SpeedConfig)
    jitter: float = _f(0.1, "σ of the mean-1 lognormal factor drawn per task (0: none)", ge=0)
    latency: float = _f(0.05, "seconds per message, each way", ge=0)
    bandwidth: float = _f(1.0e7, "bytes per second, each way (inf: free)", gt=0)


@dataclass
class StopConfig:
    """``stop``: when the run ends (whichever comes first)."""

    num_updates: int = _f(200, "server model versions to make", ge=1)
    max_virtual_time: float | None = _f(None, "virtual-time budget in seconds", gt=0, optional=True)
    target_accuracy: float | None = _f(None, "stop once test accuracy reaches this", gt=0, le=1, optional=True)


@dataclass
class EvaluationConfig:
    """``evaluation``: when and where the global model is evaluated."""

    every: int = _f(5, "evaluate every this many model versions", ge=1)
    federated_clients: int = _f(0, "clients asked for federated evaluation (0: server only)", ge=0)


@dataclass
class OutputConfig:
    """``output``: what is written besides the CSV files."""

    checkpoint_every: int = _f(50, "save a checkpoint every this many versions (0: never)", ge=0)
    resume_every: int = _f(
        10, "save checkpoints/resume.pt (everything run.resume needs) every this many versions (0: never)", ge=0
    )
    plots: bool = _f(True, "write PNG plots at the end")


@dataclass
class CommConfig:
    """``comm``: messaging between the ServerApp and the ClientApps."""

    timeout: float = _f(600.0, "wall seconds to wait for a reply before counting it failed", gt=0)
    message_ttl: float = _f(3600.0, "time-to-live of every message, in seconds", gt=0)
    max_retries: int = _f(2, "re-dispatches of a failing client before it is left out", ge=0)
    retry_backoff: float = _f(
        0.0, "wall seconds before a failed client is dispatched again, doubled after each consecutive failure (0: at once; deployment: e.g. 2)", ge=0
    )
    retry_backoff_max: float = _f(60.0, "longest wait between two re-dispatches of a failing client, in wall seconds", gt=0)
    fail_fast: int = _f(
        3, "stop the run when its first replies, from this many clients, all fail with the same ClientApp error or malformed update (0: never)", ge=0
    )
    max_inflight_per_node: int = _f(1, "messages in flight per SuperNode", ge=1)
    push_window: int = _f(
        0, "messages in flight in all (0: auto, CPUs + 1 with the virtual clock, no limit with the wall clock)", ge=0
    )
    poll_interval: float = _f(0.005, "wall seconds between pulls when nothing is ready", gt=0)


@dataclass
class AttackConfig:
    """``attack``: Byzantine clients injected by the simulation."""

    name: str = _f(
        "none",
        "attack",
        choices=("none", "label_flip", "gaussian", "sign_flip", "scaling", "model_scaling", "backdoor", "alie", "ipm"),
    )
    fraction: float = _f(0.2, "share of clients that are malicious (seeded choice)", ge=0, lt=1)
    clients: str = _f("", "explicit malicious client ids, comma-separated (overrides fraction)")
    boost: float = _f(1.0, "update multiplier (sign_flip: -boost·Δ; backdoor: boost·Δ)", gt=0)
    scale: float = _f(10.0, "update multiplier (scaling) or model multiplier (model_scaling)", gt=0)
    sigma: float = _f(1.0, "standard deviation of the noise (gaussian)", gt=0)
    target_label: int = _f(0, "label the trigger maps to (backdoor)", ge=0)
    trigger_size: int = _f(2, "side of the square pixel trigger (backdoor)", ge=1)
    poison_fraction: float = _f(0.5, "share of an attacker's examples poisoned (label_flip, backdoor)", gt=0, le=1)
    z: float = _f(1.5, "z of μ + z·σ over honest deltas (alie)", ge=0)
    epsilon: float = _f(10.0, "ε of -ε·μ over honest deltas (ipm)", gt=0)


@dataclass
class LocalDpConfig:
    """``privacy.local``: DP-SGD on every client (Opacus), sample-level privacy."""

    enabled: bool = _f(False, "train every client with DP-SGD (Opacus); BatchNorm layers become GroupNorm")
    noise_multiplier: float | None = _f(
        1.0, "z of DP-SGD: noise std = z·max_grad_norm (none: derived from target_epsilon)", gt=0, optional=True
    )
    target_epsilon: float | None = _f(
        None, "ε each client may spend over max_participations; sets z (none: use noise_multiplier)", gt=0, optional=True
    )
    max_participations: int = _f(
        0, "local updates per client that target_epsilon covers; the server stops dispatching a client after them (0: unlimited)", ge=0
    )
    max_grad_norm: float = _f(1.0, "C, per-example gradient clipping bound", gt=0)
    delta: float = _f(1.0e-5, "δ of the reported (ε, δ)", gt=0, lt=1)
    accountant: str = _f("rdp", "Opacus accountant", choices=("rdp", "prv", "gdp"))


@dataclass
class CentralDpConfig:
    """``privacy.central``: clipped updates, Gaussian noise on each aggregate (client-level privacy)."""

    enabled: bool = _f(False, "clip every update to clipping_norm and add N(0, (z·C/K)²) to each aggregated mean")
    noise_multiplier: float = _f(1.0, "z, noise std relative to the sensitivity C/K", gt=0)
    clipping_norm: float = _f(1.0, "C, L2 bound of each update Δ", gt=0)
    clipping: str = _f(
        "server", "where updates are clipped: server, or client (Flower's fixedclipping_mod; the server re-checks)",
        choices=("server", "client"),
    )
    delta: float = _f(1.0e-5, "δ of the reported (ε, δ)", gt=0, lt=1)
    sampling: str = _f(
        "none",
        "accounting: none (no amplification, valid for any client selection) or poisson (assumes each aggregation samples K of data.num_clients at random)",
        choices=("none", "poisson"),
    )
    allow_robust: bool = _f(False, "allow mean-calibrated noise with a non-mean strategy.aggregator (the guarantee then does not hold)")


@dataclass
class SecAggConfig:
    """``privacy.secagg``: simulated secure aggregation over the FedBuff buffer."""

    enabled: bool = _f(False, "clients mask their quantised updates with pairwise masks that cancel in the buffer sum")
    dropout: str = _f(
        "recover",
        "a member of a buffer that fails: recover (survivors reveal the pair seeds; its masks are removed) or discard (the buffer is dropped)",
        choices=("recover", "discard"),
    )
    precision_bits: int = _f(16, "fixed-point fraction bits of the quantised update (2^-bits resolution)", ge=1, le=24)


@dataclass
class PrivacyConfig:
    """``privacy``: differential privacy and secure aggregation."""

    local: LocalDpConfig = _section(LocalDpConfig)
    central: CentralDpConfig = _section(CentralDpConfig)
    secagg: SecAggConfig = _section(SecAggConfig)


@dataclass
class CompressionConfig:
    """``compression``: how clients encode their updates for upload."""

    method: str = _f("none", "update sparsification: none (dense) or topk", choices=("none", "topk"))
    ratio: float = _f(0.1, "share of the coordinates top-k keeps", gt=0, le=1)
    error_feedback: bool = _f(True, "keep what top-k/quantisation dropped per client and add it to the next update")
    quantize: str = _f("none", "value encoding: none (float32) or int8 (one scale per update)", choices=("none", "int8"))


@dataclass
class Config:  # pylint: disable=too-many-instance-attributes
    """A whole experiment."""

    run: RunConfig = _section(RunConfig)
    data: DataConfig = _section(DataConfig)
    model: ModelConfig = _section(ModelConfig)
    client: ClientConfig = _section(ClientConfig)
    strategy: StrategyConfig = _section(StrategyConfig)
    delay: DelayConfig = _section(DelayConfig)
    stop: StopConfig = _section(StopConfig)
    evaluation: EvaluationConfig = _section(EvaluationConfig)
    output: OutputConfig = _section(OutputConfig)
    comm: CommConfig = _section(CommConfig)
    attack: AttackConfig = _section(AttackConfig)
    privacy: PrivacyConfig = _section(PrivacyConfig)
    compression: CompressionConfig = _section(CompressionConfig)


SPEED_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "uniform": (("low", "high"), ()),
    "exponential": (("mean",), ()),
    "lognormal": (("mean", "sigma"), ()),
    "pareto": (("shape", "scale"), ("cap",)),
}
"""Required and optional ``delay.speed`` parameters of each distribution."""

SPEED_PARAM_NAMES = ("value", "low", "high", "mean", "sigma", "shape", "scale", "cap")


# --------------------------------------------------------------------------
# Flat views of the schema
# --------------------------------------------------------------------------


def _subsection(fld: dataclasses.Field) -> type | None:
    """The dataclass of a nested section field, or None for a leaf."""
    factory = fld.default_factory
    if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
        return factory  # type: ignore[return-value]
    return None


def schema_fields(cls: type = Config, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf field of the schema, keyed by its dotted name."""
    out: dict[str, dataclasses.Field] = {}
    for fld in dataclasses.fields(cls):
        name = f"{prefix}{fld.name}"
        section = _subsection(fld)
        if section is not None:
            out.update(schema_fields(section, name + "."))
        else:
            out[name] = fld
    return out


def defaults() -> dict[str, Any]:
    """Built-in default of every field, keyed by dotted name."""
    return flatten(to_dict(Config()))


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def to_dict(config: Config) -> dict[str, Any]:
    """The configuration as nested plain data (for ``config.yaml``)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_STRINGS)


def _check_type(name: str, value: Any, fld: dataclasses.Field) -> tuple[Any, str | None]:
    """Coerce ``value`` to the field's type, or return an error."""
    meta = fld.metadata
    kind = fld.type if isinstance(fld.type, str) else getattr(fld.type, "__name__", "")
    base = kind.replace(" | None", "")
    if _is_none(value):
        if meta.get("optional"):
            return None, None
        if "none" in _choices(meta):
            return "none", None  # a choice named none (attack.name: none)
        return None, f"{name}: a value is required (got none)"
    if base == "bool":
        if isinstance(value, bool):
            return value, None
        return None, f"{name}: expected true or false, got {value!r}"
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            return None, f"{name}: expected an integer, got {value!r}"
        return int(value), None
    if base == "float":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, f"{name}: expected a number, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None, f"{name}: expected a number, got {value!r}"
        return float(value), None
    if not isinstance(value, str):
        return None, f"{name}: expected a string, got {value!r}"
    return value, None


def _choices(meta: Any) -> tuple[str, ...]:
    """A field's accepted values; a callable ``choices`` is asked each time
    (datasets: :func:`fedstale.data.register_torchvision_dataset` adds names)."""
    choices = meta.get("choices", ())
    return tuple(choices()) if callable(choices) else tuple(choices)


def _check_rules(name: str, value: Any, meta: Any) -> str | None:
    """Check choices and bounds."""
    if value is None:
        return None
    choices = _choices(meta) if "choices" in meta else None
    if choices is not None and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{name}: '{value}' is not one of {', '.join(choices)}{extra}"
    for rule, ok, text in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if rule in meta and not ok(value, meta[rule]):
            return f"{name}: must be {text} {meta[rule]:g}, got {value!r}"
    return None


def _unknown_key_error(key: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    extra = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"{key}: unknown field{extra} (see docs/configuration.md)"


def build_config(flat_values: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from dotted-name values.

    Fields not given keep their built-in default.

    Raises
    ------
    ConfigError
        Listing every invalid or unknown field.
    """
    fields = schema_fields()
    problems = [_unknown_key_error(k, list(fields)) for k in flat_values if k not in fields]
    values = defaults()
    for key, value in flat_values.items():
        if key not in fields:
            continue
        coerced, error = _check_type(key, value, fields[key])
        error = error or _check_rules(key, coerced, fields[key].metadata)
        if error:
            problems.append(error)
        else:
            values[key] = coerced
    if problems:
        raise ConfigError(problems)
    config = _from_flat(values)
    problems = _cross_checks(config, explicit=set(flat_values))
    if problems:
        raise ConfigError(problems)
    required, optional = SPEED_PARAMETERS[config.delay.speed.distribution]
    for param in SPEED_PARAM_NAMES:
        if param not in required + optional:
            setattr(config.delay.speed, param, None)
    return config


def _from_flat(values: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    kwargs = {}
    for fld in dataclasses.fields(cls):
        name = f"{prefix}{fld.name}"
        section = _subsection(fld)
        if section is not None:
            kwargs[fld.name] = _from_flat(values, section, name + ".")
        else:
            kwargs[fld.name] = values[name]
    return cls(**kwargs)


def _cross_checks(config: Config, explicit: set[str]) -> list[str]:
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
    if config.data.partitioner == "pathological" and config.data.classes_per_client > 10:
        problems.append("data.classes_per_client: digits has 10 classes; use 1..10")
    problems += _speed_checks(config.delay.speed, explicit)
    problems += _robustness_checks(config)
    problems += _attack_checks(config)
    problems += _data_model_checks(config)
    problems += _privacy_checks(config)
    problems += _resume_checks(config)
    return problems


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


def _robustness_checks(config: Config) -> list[str]:
    """The aggregator pipeline, trust and filters fit the strategy."""
    # pylint: disable=import-outside-toplevel
    from .aggregation.pipeline import make_aggregator

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


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file into dotted-name values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config: file '{path}' not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError([f"config: '{path}' is not valid YAML: {err}"]) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config: '{path}' must hold a mapping of sections, got {type(data).__name__}"])
    return flatten(data)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML experiment and apply dotted-name ``overrides`` on top.

    An override that switches ``delay.speed.distribution`` to another
    distribution starts it from the overrides' own parameters: the file's
    parameters of the previous distribution are dropped rather than reported
    as unused.
    """
    values = read_yaml(path)
    overrides = dict(overrides or {})
    key = "delay.speed.distribution"
    if key in overrides and overrides[key] != values.get(key, defaults()[key]):
        for param in SPEED_PARAM_NAMES:
            values.pop(f"delay.speed.{param}", None)
    values.update(overrides)
    return build_config(values)


def resolve_config_path(name: str, search: list[Path]) -> Path:
    """Find ``name``: absolute, or relative to the first folder holding it."""
    candidate = Path(name)
    if candidate.is_absolute():
        return candidate
    for folder in search:
        if (folder / candidate).is_file():
            return folder / candidate
    return candidate


def run_config_overrides(
    run_config: dict[str, Any], explicit: dict[str, Any]
) -> dict[str, Any]:
    """The fields a Flower run config sets, by precedence.

    ``run_config`` is the fused run config (pyproject values plus
    ``--run-config``); ``explicit`` is what ``--run-config`` passed. A
    pyproject value counts only when it differs from the built-in default.
    """
    builtin = defaults()
    out = {}
    for key, value in run_config.items():
        if key == "config":
            continue
        if key in explicit:
            out[key] = explicit[key]
        elif key not in builtin or not _same(value, builtin[key]):
            out[key] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if _is_none(a) and _is_none(b):
        return True
    return a == b and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    )


def toml_defaults() -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` entries: each field's default, none as "none"."""
    return {k: ("none" if v is None else v) for k, v in defaults().items()}


def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted name, default, help) of every field, for docs and ``--help``."""
    rows = []
    for name, fld in schema_fields().items():
        default = fld.default
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        extra = ""
        if "choices" in fld.metadata:
            extra = f" (one of: {', '.join(_choices(fld.metadata))})"
        rows.append((name, shown, fld.metadata["help"] + extra))
    return rows


def markdown_field_rows() -> str:
    """The rows of README's field table (``| field | default | meaning |``)."""
    return "\n".join(
        f"| `{name}` | `{default if default else chr(34) * 2}` | {text} |"
        for name, default, text in describe_fields()
    )


def toml_run_config_table(config_path: str = "configs/default.yaml") -> str:
    """The ``[tool.flwr.app.config]`` tables of pyproject.toml, as TOML."""
    import tomli_w  # pylint: disable=import-outside-toplevel

    nested: dict[str, Any] = {"config": config_path}
    for key, value in toml_defaults().items():
        *parents, leaf = key.split(".")
        table = nested
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = value
    return tomli_w.dumps({"tool": {"flwr": {"app": {"config": nested}}}})


def main(argv: list[str] | None = None) -> int:
    """Validate a config file: ``python -m fedstale.config FILE [key=value ...]``."""
    import argparse  # pylint: disable=import-outside-toplevel

    if argv is None:
        import sys  # pylint: disable=import-outside-toplevel

        argv = sys.argv[1:]
    if argv[:1] == ["--toml-table"]:  # maintainers: regenerate pyproject.toml's table
        print(toml_run_config_table(), end="")
        return 0
    if argv[:1] == ["--markdown-table"]:  # maintainers: regenerate README's table
        print(markdown_field_rows())
        return 0

    parser = argparse.ArgumentParser(
        prog="python -m fedstale.config",
        description="Validate a fedstale experiment and print it resolved.",
        epilog="Fields: " + "; ".join(f"{n} (default {d})" for n, d, _ in describe_fields()),
    )
    parser.add_argument("config", help="YAML experiment file, e.g. configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.name=value (YAML syntax)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"override '{item}' must look like dotted.name=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(err)
        return 2
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
