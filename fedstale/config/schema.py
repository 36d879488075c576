"""The schema: one dataclass per section, each field with its default, help and rules.

Fields are declared with :func:`_f` (default, help, and the rules
``choices``, ``ge``/``gt``/``le``/``lt``, ``optional``); the checks that
apply them are in :mod:`fedstale.config.fields`, the rules between fields in
:mod:`fedstale.config.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import NONE_STRINGS, ConfigError, _f, _section
from .data_schema import DataConfig, SyntheticConfig  # noqa: F401  (re-exported)


@dataclass
class RunConfig:
    """``run``: naming and seeding."""

    name: str = _f("", "results go to <output_dir>/<name>/; empty: the YAML file's stem")
    seed: int = _f(0, "seed of client selection, delays and local training", ge=0)
    output_dir: str = _f("results", "folder for results, relative to the working directory")
    resume: str = _f(
        "", "run folder of an interrupted (or finished) run to continue from its checkpoints/resume.pt, e.g. results/default (empty: start a new run)"
    )


def _model_names() -> list[str]:
    from ..models import MODELS  # pylint: disable=import-outside-toplevel

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
    w_per_second: float = _f(
        1.0, "per-second decay w_s of w^τ·w_s^a, a = seconds since the update's base version was made (exponential; 1: none)", gt=0, le=1
    )


@dataclass
class DynamicConfig:
    """``strategy.dynamic``: the dynamic staleness strategy."""

    ema: float = _f(0.9, "β of the running mean staleness τ̄", ge=0, lt=1)
    b_min: float = _f(1.0, "floor of b = max(b_min, τ̄)", gt=0)
    similarity_exponent: float = _f(1.0, "γ of the agreement factor ((1+cos)/2)^γ (0: off)", ge=0)


@dataclass
class AdaptiveConfig:
    """``strategy.adaptive``: the adaptive server optimizers (adam, yogi, adagrad)."""

    beta_1: float = _f(0.9, "β1, decay of the first moment m (Flower's beta_1)", ge=0, lt=1)
    beta_2: float = _f(0.99, "β2, decay of the second moment v (adam, yogi; Flower's beta_2)", ge=0, lt=1)
    tau: float = _f(1e-3, "τ of x ← x + η·m/(√v + τ), the adaptivity (Flower's tau; not the staleness)", gt=0)


@dataclass
class OortConfig:
    """``strategy.oort``: Oort's utility-guided client selection (strategy.selection: oort)."""

    epsilon: float = _f(0.1, "ε, share of picks that explore clients never heard from", ge=0, le=1)
    alpha: float = _f(2.0, "α of the speed penalty (T/t)^α of clients slower than T", ge=0)
    preferred_duration: float | None = _f(
        None, "T, preferred task duration in virtual seconds (none: the median last duration of explored clients)", gt=0, optional=True
    )


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
    server_lr: float = _f(
        1.0, "η, server learning rate of strategy.server_optimizer (FedAsync: × α_t; Flower's eta)", gt=0
    )
    server_momentum: float = _f(0.0, "β, server momentum (server_optimizer sgd)", ge=0, lt=1)
    server_optimizer: str = _f(
        "sgd",
        "step on the aggregated pseudo-gradient: sgd (with server_momentum), adam, yogi or adagrad (with strategy.adaptive)",
        choices=("sgd", "adam", "yogi", "adagrad"),
    )
    normalization: str = _f(
        "count",
        "divide the weighted sum by K (count) or by Σ s(τ) (weight_sum)",
        choices=("count", "weight_sum"),
    )
    weight_by_examples: bool = _f(False, "multiply weights by n_i / mean(n) (fedbuff, dynamic)")
    alpha: float = _f(0.6, "mixing α of FedAsync", gt=0, le=1)
    selection: str = _f(
        "random",
        "who trains next among the idle clients: random (seeded uniform), round_robin, least_participated, fastest_first (shortest last virtual duration) or oort (strategy.oort)",
        choices=("random", "round_robin", "least_participated", "fastest_first", "oort"),
    )
    max_staleness: int | None = _f(None, "drop updates staler than this (none: keep all)", ge=0, optional=True)
    max_staleness_seconds: float | None = _f(
        None, "drop updates whose base version was made more than this many seconds before they arrive (none: keep all)", gt=0, optional=True
    )
    aggregation_delay: float | None = _f(
        None, "flush a buffer holding at least min_updates updates once its first has waited this many seconds, full or not (fedbuff, dynamic; async; none: only full buffers)", gt=0, optional=True
    )
    min_updates: int = _f(1, "fewest updates a buffer flushed by aggregation_delay holds (<= buffer_size)", ge=1)
    aggregator: str = _f(
        "mean",
        "buffer reducer, optionally after pre-aggregators: e.g. median, clip>nnm>trimmed_mean",
    )
    staleness: StalenessConfig = _section(StalenessConfig)
    adaptive: AdaptiveConfig = _section(AdaptiveConfig)
    oort: OortConfig = _section(OortConfig)
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
class AvailabilityConfig:
    """``availability``: which clients are online when (simulated, on the virtual clock)."""

    model: str = _f(
        "always",
        "always (every client online), on_off (alternating exponential online/offline periods per client) or trace (online intervals from a CSV)",
        choices=("always", "on_off", "trace"),
    )
    mean_online: float = _f(60.0, "mean online period in virtual seconds (on_off)", gt=0)
    mean_offline: float = _f(20.0, "mean offline period in virtual seconds (on_off)", gt=0)
    trace: str = _f("", "CSV file with header client_id,start,end: online intervals in virtual seconds (trace)")


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
    fairness: bool = _f(False, "also evaluate the global model on every client's held-out split (client_accuracy.csv)")
    held_out: float = _f(0.2, "share of each client's examples held out from training (fairness)", gt=0, lt=1)
    targets: str = _f("", "accuracies to record the first reach of in targets.csv, comma-separated, e.g. 0.8,0.9")


@dataclass
class OutputConfig:
    """``output``: what is written besides the CSV files."""

    checkpoint_every: int = _f(50, "save a checkpoint every this many versions (0: never)", ge=0)
    resume_every: int = _f(
        10, "save checkpoints/resume.pt (everything run.resume needs) every this many versions (0: never)", ge=0
    )
    plots: bool = _f(True, "write PNG plots at the end")
    tracker: str = _f(
        "none",
        "also log the run to TensorBoard (<run>/tensorboard) or MLflow (the tensorboard / mlflow extra)",
        choices=("none", "tensorboard", "mlflow"),
    )
    tracking_uri: str = _f("", "MLflow tracking URI (empty: a SQLite store ./mlflow.db, artifacts in ./mlruns)")


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
    tasks_per_message: int = _f(
        0, "training tasks one message to a SuperNode may carry, if its ClientApp takes batches (0: auto, up to comm.batch_seconds of measured compute; 1: one task per message; N: at most N); never changes the results", ge=0
    )
    batch_seconds: float = _f(
        0.25, "auto batches (comm.tasks_per_message: 0) are filled up to this much estimated ClientApp compute, in wall seconds", gt=0
    )
    poll_interval: float = _f(
        0.005, "wall seconds between pulls when nothing is ready, after a pull that brought replies; doubled after each empty pull", gt=0
    )
    max_poll_interval: float = _f(
        0.0, "the longest wait between two pulls (0: auto, 0.02 on Flower's simulation engine, 0.1 on a SuperLink)", ge=0
    )


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
    availability: AvailabilityConfig = _section(AvailabilityConfig)


SPEED_PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "uniform": (("low", "high"), ()),
    "exponential": (("mean",), ()),
    "lognormal": (("mean", "sigma"), ()),
    "pareto": (("shape", "scale"), ("cap",)),
}
"""Required and optional ``delay.speed`` parameters of each distribution."""

SPEED_PARAM_NAMES = ("value", "low", "high", "mean", "sigma", "shape", "scale", "cap")
