"""Tests of the experiment configuration (fedstale/config/)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from fedstale.config import (
    Config,
    ConfigError,
    build_config,
    defaults,
    flatten,
    load_config,
    run_config_overrides,
    to_dict,
    toml_defaults,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
PYTHON = "/work/venv/bin/python" if Path("/work/venv/bin/python").exists() else sys.executable


def _problems(values: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(values)
    return info.value.problems


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# Shipped configs
# --------------------------------------------------------------------------


DATASET_CONFIGS = {
    "mnist": ("mnist", "cnn"),
    "fashion_mnist": ("fashion_mnist", "resnet8"),
    "cifar10": ("cifar10", "resnet20"),
    "cifar10_squeezenet": ("cifar10", "squeezenet"),
}
STRATEGY_CONFIGS = [
    p for p in CONFIGS if p.stem not in {"robustness", "dp_sgd", "central_dp", *DATASET_CONFIGS}
]  # dp_sgd.yaml: tests/test_dp_sgd.py; central_dp.yaml: tests/test_central_dp.py


def test_configs_folder_has_yaml_files() -> None:
    """The shipped experiments are present."""
    assert [p.name for p in CONFIGS] == [
        "central_dp.yaml", "cifar10.yaml", "cifar10_squeezenet.yaml", "compression.yaml",
        "default.yaml", "dp_sgd.yaml", "dynamic.yaml",
        "fashion_mnist.yaml", "fedasync.yaml", "fedavg.yaml", "mnist.yaml", "robustness.yaml",
        "secagg.yaml",
    ]


@pytest.mark.parametrize("stem", DATASET_CONFIGS)
def test_dataset_configs_pair_a_dataset_with_a_model_that_fits(stem: str) -> None:
    """Each dataset config validates, and its model takes the dataset's images
    (shape and classes from the registry; no download)."""
    import torch

    from fedstale.data import IMAGE_DATASETS
    from fedstale.models import build_model

    config = load_config(REPO / "configs" / f"{stem}.yaml")
    assert (config.data.dataset, config.model.name) == DATASET_CONFIGS[stem]
    spec = IMAGE_DATASETS[config.data.dataset].spec
    model = build_model(config.model.name, spec)
    logits = model(torch.zeros(2, *spec.input_shape))
    assert logits.shape == (2, spec.num_classes)


@pytest.mark.parametrize("path", STRATEGY_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    """The strategy YAMLs load and validate; their strategy matches their name."""
    config = load_config(path)
    assert isinstance(config, Config)
    expected = {"default": "fedbuff", "compression": "fedbuff", "secagg": "fedbuff"}.get(path.stem, path.stem)
    assert config.strategy.name == expected
    assert config.data.num_clients == 20
    assert config.strategy.concurrency == 10


def test_robustness_config_is_a_barrier_of_all_clients() -> None:
    """configs/robustness.yaml: 20 IID clients, all in each sync round, f = 4."""
    config = load_config(REPO / "configs" / "robustness.yaml")
    assert (config.strategy.name, config.strategy.resolved_mode()) == ("fedavg", "sync")
    assert config.strategy.concurrency == config.data.num_clients == 20
    assert config.data.partitioner == "iid" and config.strategy.robust.f == 4


def test_shipped_config_values() -> None:
    """Hand-read values of the shipped YAMLs come through, auto mode resolved."""
    fedavg = load_config(REPO / "configs" / "fedavg.yaml")
    assert fedavg.strategy.resolved_mode() == "sync"
    assert fedavg.stop.num_updates == 100
    fedasync = load_config(REPO / "configs" / "fedasync.yaml")
    assert fedasync.strategy.resolved_mode() == "async"
    assert fedasync.stop.num_updates == 1000
    assert fedasync.output.checkpoint_every == 250
    default = load_config(REPO / "configs" / "default.yaml")
    assert default.delay.speed.distribution == "pareto"
    assert (default.delay.speed.shape, default.delay.speed.scale, default.delay.speed.cap) == (1.2, 0.005, 0.5)
    assert default.delay.bandwidth == 1.0e7


def test_empty_yaml_gives_defaults(tmp_path: Path) -> None:
    """An empty file means every field keeps its built-in default."""
    config = load_config(_write(tmp_path, ""))
    assert to_dict(config) == to_dict(Config())
    assert config.strategy.name == "fedbuff"
    assert config.client.lr == 0.05


# --------------------------------------------------------------------------
# Field errors
# --------------------------------------------------------------------------


def test_unknown_key_with_suggestion() -> None:
    """A misspelt field is rejected and the closest field is suggested."""
    problems = _problems({"strategy.concurency": 5})
    assert len(problems) == 1
    assert problems[0].startswith(
        "strategy.concurency: unknown field; did you mean 'strategy.concurrency'?"
    )


def test_unknown_key_without_suggestion() -> None:
    """A field with no close match gets no suggestion."""
    problems = _problems({"zzzzqqq": 1})
    assert len(problems) == 1
    assert problems[0].startswith("zzzzqqq: unknown field")
    assert "did you mean" not in problems[0]


def test_bad_choice_with_suggestion() -> None:
    """A value outside the choices lists them and suggests the closest."""
    assert _problems({"strategy.name": "fedbuf"}) == [
        "strategy.name: 'fedbuf' is not one of fedasync, fedbuff, fedavg, dynamic "
        "(did you mean 'fedbuff'?)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "start"),
    [
        ("client.lr", 0, "client.lr: must be > 0"),
        ("client.lr", -0.1, "client.lr: must be > 0"),
        ("client.momentum", 1.0, "client.momentum: must be < 1"),
        ("data.test_fraction", 1.5, "data.test_fraction: must be < 1"),
        ("strategy.alpha", 1.2, "strategy.alpha: must be <= 1"),
        ("run.seed", -1, "run.seed: must be >= 0"),
        ("stop.num_updates", 0, "stop.num_updates: must be >= 1"),
    ],
)
def test_bounds(key: str, value: float, start: str) -> None:
    """Bounds name the field and the bound."""
    problems = _problems({key: value})
    assert len(problems) == 1
    assert problems[0].startswith(start)


@pytest.mark.parametrize(
    ("key", "value", "start"),
    [
        ("stop.num_updates", "many", "stop.num_updates: expected an integer"),
        ("stop.num_updates", 2.5, "stop.num_updates: expected an integer"),
        ("stop.num_updates", True, "stop.num_updates: expected an integer"),
        ("client.lr", "fast", "client.lr: expected a number"),
        ("output.plots", "yes", "output.plots: expected true or false"),
        ("run.name", 5, "run.name: expected a string"),
    ],
)
def test_type_errors(key: str, value: object, start: str) -> None:
    """A value of the wrong type names the field and the expected type."""
    problems = _problems({key: value})
    assert len(problems) == 1
    assert problems[0].startswith(start)


def test_type_coercions() -> None:
    """Whole floats become ints, numeric strings become floats ('inf' included)."""
    config = build_config({"stop.num_updates": 30.0, "client.lr": "0.25", "delay.bandwidth": "inf"})
    assert config.stop.num_updates == 30
    assert isinstance(config.stop.num_updates, int)
    assert config.client.lr == 0.25
    assert config.delay.bandwidth == math.inf


def test_several_problems_reported_together() -> None:
    """Every bad field is listed in one ConfigError, one line each."""
    with pytest.raises(ConfigError) as info:
        build_config(
            {
                "strategy.name": "fedbuf",
                "client.lr": 0,
                "stop.num_updates": "x",
                "strategy.concurency": 3,
            }
        )
    err = info.value
    assert len(err.problems) == 4
    assert str(err).startswith("invalid configuration:\n")
    assert str(err).count("\n  - ") == 4


def test_none_accepted_for_optional_fields() -> None:
    """none/null/None clear an optional field."""
    for value in ("none", "null", "None", None):
        config = build_config({"stop.target_accuracy": value, "strategy.max_staleness": value})
        assert config.stop.target_accuracy is None
        assert config.strategy.max_staleness is None
    config = build_config({"stop.target_accuracy": 0.9, "strategy.max_staleness": 4})
    assert (config.stop.target_accuracy, config.strategy.max_staleness) == (0.9, 4)


def test_none_in_yaml(tmp_path: Path) -> None:
    """In a YAML file, both `none` and `null` clear optional fields."""
    path = _write(tmp_path, "stop:\n  target_accuracy: none\n  max_virtual_time: null\n")
    config = load_config(path)
    assert (config.stop.target_accuracy, config.stop.max_virtual_time) == (None, None)
    bad = _write(tmp_path, "stop:\n  num_updates: null\n", name="bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.problems == ["stop.num_updates: a value is required (got none)"]


@pytest.mark.parametrize("value", ["none", None])
def test_none_rejected_for_required_fields(value: object) -> None:
    """none on a required field is an error naming it."""
    assert _problems({"client.lr": value}) == ["client.lr: a value is required (got none)"]


# --------------------------------------------------------------------------
# Cross-field rules
# --------------------------------------------------------------------------


def test_fedavg_async_rejected() -> None:
    """FedAvg is synchronous: mode async is an error."""
    problems = _problems({"strategy.name": "fedavg", "strategy.mode": "async"})
    assert len(problems) == 1
    assert problems[0].startswith("strategy.mode: fedavg is synchronous")
    assert build_config({"strategy.name": "fedavg"}).strategy.resolved_mode() == "sync"


def test_fedasync_sync_rejected() -> None:
    """FedAsync is asynchronous: mode sync is an error."""
    problems = _problems({"strategy.name": "fedasync", "strategy.mode": "sync"})
    assert len(problems) == 1
    assert problems[0].startswith("strategy.mode: fedasync is asynchronous")


def test_concurrency_above_num_clients() -> None:
    """More clients at once than clients exist is an error; equal is fine."""
    assert _problems({"strategy.concurrency": 30, "data.num_clients": 20}) == [
        "strategy.concurrency: 30 clients at once needs at least as many clients; "
        "data.num_clients is 20"
    ]
    assert build_config({"strategy.concurrency": 20, "data.num_clients": 20}).strategy.concurrency == 20


def test_aggregator_pipeline_checked_against_the_registries() -> None:
    """strategy.aggregator names registered stages; the buffer (async) or the
    barrier (sync) holds at least what the pipeline needs with strategy.robust.f."""
    assert _problems({"strategy.aggregator": "median>mean"}) == [
        "strategy.aggregator: 'median' is not a pre-aggregator; accepted before '>': "
        "clip, nnm, bucketing"
    ]
    assert _problems({"strategy.aggregator": "krum", "strategy.robust.f": 2}) == [
        "strategy.buffer_size: 'krum' with strategy.robust.f = 2 needs at least 7 updates "
        "per aggregation, got 5"
    ]
    assert _problems(
        {"strategy.name": "fedavg", "strategy.aggregator": "bucketing>krum", "strategy.robust.f": 3}
    ) == [
        "strategy.concurrency: 'bucketing>krum' with strategy.robust.f = 3 needs at least 18 "
        "updates per aggregation, got 10"
    ]
    assert build_config({"strategy.aggregator": "clip>nnm>krum"}).strategy.aggregator == "clip>nnm>krum"


def test_speed_param_not_used_by_distribution() -> None:
    """An explicit parameter the distribution does not use is an error."""
    problems = _problems(
        {
            "delay.speed.distribution": "lognormal",
            "delay.speed.mean": 0.01,
            "delay.speed.sigma": 0.5,
            "delay.speed.shape": 2.0,
        }
    )
    assert problems == [
        "delay.speed.shape: not a parameter of distribution 'lognormal' (it uses mean, sigma)"
    ]


def test_unused_default_speed_params_cleared() -> None:
    """Switching distribution drops the pareto defaults instead of complaining."""
    config = build_config(
        {"delay.speed.distribution": "lognormal", "delay.speed.mean": 0.01, "delay.speed.sigma": 0.5}
    )
    speed = config.delay.speed
    assert (speed.mean, speed.sigma) == (0.01, 0.5)
    assert (speed.shape, speed.scale, speed.cap, speed.value, speed.low, speed.high) == (None,) * 6


def test_speed_required_param_missing() -> None:
    """distribution: constant without value is an error naming the parameter."""
    assert _problems({"delay.speed.distribution": "constant"}) == [
        "delay.speed.value: required by distribution 'constant' (it uses value)"
    ]


@pytest.mark.parametrize(("low", "high"), [(0.5, 0.5), (0.6, 0.2)])
def test_uniform_low_must_be_below_high(low: float, high: float) -> None:
    """uniform needs low < high."""
    problems = _problems(
        {"delay.speed.distribution": "uniform", "delay.speed.low": low, "delay.speed.high": high}
    )
    assert problems == [f"delay.speed.high: must be > delay.speed.low ({low}), got {high}"]


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"config: file '{path}' not found"]


def test_invalid_yaml(tmp_path: Path) -> None:
    """Unparseable YAML is a ConfigError naming the file."""
    path = _write(tmp_path, "strategy: [fedbuff\n  name: : :\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"config: '{path}' is not valid YAML:")


def test_non_mapping_yaml(tmp_path: Path) -> None:
    """A YAML list instead of sections is rejected, naming the type."""
    path = _write(tmp_path, "- strategy\n- data\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"config: '{path}' must hold a mapping of sections, got list"]


def test_yaml_errors_and_overrides(tmp_path: Path) -> None:
    """Errors in a YAML file are found by dotted name; overrides replace its values."""
    path = _write(tmp_path, "strategy:\n  name: fedasync\n  concurrency: 4\nclient:\n  lr: -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("client.lr: must be > 0")
    config = load_config(path, {"client.lr": 0.2})
    assert (config.strategy.name, config.strategy.concurrency, config.client.lr) == ("fedasync", 4, 0.2)


# --------------------------------------------------------------------------
# Overrides and pyproject.toml
# --------------------------------------------------------------------------


def _pyproject_table() -> dict:
    with (REPO / "pyproject.toml").open("rb") as handle:
        table = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    return flatten(table)


def test_overrides_precedence() -> None:
    """Explicit values always win; pyproject values count only if not the default."""
    run_config = {
        "config": "configs/fedasync.yaml",
        "strategy.concurrency": 10,  # = default, not explicit → ignored
        "client.lr": 0.1,  # ≠ default (0.05) → applied
        "stop.num_updates": 200,  # = default but explicit → applied
        "delay.bandwidth": 10000000.0,  # = default 1e7 → ignored
        "stop.target_accuracy": "none",  # = default None → ignored
        "delay.speed.cap": "none",  # ≠ default 0.5 → applied
    }
    explicit = {"stop.num_updates": 200, "config": "configs/fedasync.yaml"}
    assert run_config_overrides(run_config, explicit) == {
        "client.lr": 0.1,
        "stop.num_updates": 200,
        "delay.speed.cap": "none",
    }


def test_explicit_value_overrides_yaml_even_if_default(tmp_path: Path) -> None:
    """YAML sets concurrency 5: the pyproject default leaves it; an explicit 10 wins."""
    path = _write(tmp_path, "strategy:\n  concurrency: 5\n  buffer_size: 3\n")
    run_config = {"config": str(path), **_pyproject_table()}
    assert load_config(path, run_config_overrides(run_config, {})).strategy.concurrency == 5
    explicit = {"strategy.concurrency": 10}
    fused = {**run_config, **explicit}
    config = load_config(path, run_config_overrides(fused, explicit))
    assert config.strategy.concurrency == 10
    assert config.strategy.buffer_size == 3


def test_pyproject_value_differing_from_default_applies(tmp_path: Path) -> None:
    """A pyproject value that is not the built-in default overrides the YAML."""
    path = _write(tmp_path, "client:\n  lr: 0.2\nstrategy:\n  buffer_size: 3\n")
    run_config = {"config": str(path), **_pyproject_table(), "strategy.buffer_size": 7}
    config = load_config(path, run_config_overrides(run_config, {}))
    assert config.strategy.buffer_size == 7
    assert config.client.lr == 0.2


def test_config_key_is_never_an_override() -> None:
    """'config' names the YAML file; it is never passed on as a field."""
    out = run_config_overrides({"config": "a.yaml"}, {"config": "a.yaml"})
    assert out == {}


def test_pyproject_lists_every_field_with_its_default() -> None:
    """[tool.flwr.app.config] = {config} ∪ toml_defaults(), values and types."""
    table = _pyproject_table()
    config_path = table.pop("config")
    assert (REPO / config_path).is_file()
    expected = toml_defaults()
    assert table == expected
    wrong_types = [k for k in expected if type(table[k]) is not type(expected[k])]
    assert wrong_types == []
    assert set(table) == set(defaults())  # every schema field, nothing else


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def test_cli_prints_resolved_yaml() -> None:
    """`python -m fedstale.config configs/default.yaml` exits 0 and prints YAML."""
    proc = subprocess.run(
        [PYTHON, "-m", "fedstale.config", "configs/default.yaml", "strategy.concurrency=4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert list(printed) == [
        "run", "data", "model", "client", "strategy", "delay", "stop", "evaluation", "output",
        "comm", "attack", "privacy", "compression", "availability",
    ]
    assert printed["strategy"]["name"] == "fedbuff"
    assert printed["strategy"]["concurrency"] == 4
    assert printed["delay"]["speed"]["cap"] == 0.5


def test_cli_bad_override_exits_2() -> None:
    """A bad override exits 2 and prints the error."""
    proc = subprocess.run(
        [PYTHON, "-m", "fedstale.config", "configs/default.yaml", "strategy.name=nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout.startswith("invalid configuration:")
    assert "strategy.name: 'nope' is not one of fedasync, fedbuff, fedavg, dynamic" in proc.stdout


def test_switching_distribution_by_override_drops_the_files_parameters(tmp_path: Path) -> None:
    """Overriding delay.speed.distribution to another one starts it afresh;
    naming the file's own distribution keeps the file's parameters."""
    path = _write(
        tmp_path,
        "delay:\n  speed:\n    distribution: pareto\n    shape: 2.0\n    scale: 0.01\n    cap: 0.3\n",
    )
    switched = load_config(
        path, {"delay.speed.distribution": "lognormal", "delay.speed.mean": 0.01, "delay.speed.sigma": 1.0}
    )
    speed = switched.delay.speed
    assert (speed.mean, speed.sigma, speed.shape, speed.scale, speed.cap) == (0.01, 1.0, None, None, None)
    same = load_config(path, {"delay.speed.distribution": "pareto", "delay.speed.cap": 2.0})
    assert (same.delay.speed.shape, same.delay.speed.scale, same.delay.speed.cap) == (2.0, 0.01, 2.0)


# --------------------------------------------------------------------------
# Imports
# --------------------------------------------------------------------------


def _fedstale_imports(path: Path) -> set[str]:
    """The fedstale modules ``path`` imports, at the top or inside functions."""
    import ast

    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module[: -len(".__init__")]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found |= {name} | {f"{name}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("fedstale")}


def _module_path(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_config_never_reaches_the_builders_or_the_strategies() -> None:
    """Validating a config asks the registries (data, models, aggregation),
    never the builders: that import closed a cycle through the strategies."""
    seen, todo = set(), sorted(str(p) for p in (REPO / "fedstale" / "config").glob("*.py"))
    while todo:
        path = Path(todo.pop())
        for name in _fedstale_imports(path):
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # a module and the packages it runs
                target = _module_path(".".join(parts[:i]))
                if target is not None and str(target) not in seen:
                    seen.add(str(target))
                    todo.append(str(target))
    reached = {str(Path(p).relative_to(REPO)) for p in seen}
    assert "fedstale/aggregation/pipeline.py" in reached  # strategy.aggregator's check
    assert not {p for p in reached if p.startswith(("fedstale/builders", "fedstale/strategies"))}


@pytest.mark.parametrize("package", ["data", "models", "aggregation"])
def test_registries_do_not_import_config_or_builders(package: str) -> None:
    """What config asks for its choices and checks never imports it back."""
    for path in sorted((REPO / "fedstale" / package).glob("*.py")):
        bad = {n for n in _fedstale_imports(path) if n.startswith(("fedstale.config", "fedstale.builders"))}
        assert not bad, (path.name, bad)
