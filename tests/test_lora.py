"""LoRA adapter federation on a tiny text task written by the test.

The transformer is built from a config (nothing downloaded) and the text
dataset is two JSONL files in a temporary folder.

Seed table (``python simulations/seed_table.py``; seeds 0-4, 2 CPU cores, 2026-12-01):
the worst value of each check over the seeds, its bound, and the margin between them.

| test | statistic | seeds | worst | bound | margin |
|---|---|---|---|---|---|
| test_lora_adapters_learn_with_fedbuff_and_fedasync[default-30] | final accuracy | 0,1,2,3,4 | 0.990 | >= 0.9 | 0.090 |
| test_lora_adapters_learn_with_fedbuff_and_fedasync[default-30] | initial accuracy | 0,1,2,3,4 | 0.520 | <= 0.7 | 0.180 |
| test_lora_adapters_learn_with_fedbuff_and_fedasync[fedasync-100] | final accuracy | 0,1,2,3,4 | 0.980 | >= 0.9 | 0.080 |
| test_lora_adapters_learn_with_fedbuff_and_fedasync[fedasync-100] | initial accuracy | 0,1,2,3,4 | 0.520 | <= 0.7 | 0.180 |
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedstale.builders import initial_arrays
from fedstale.config import ConfigError, load_config
from fedstale.data import load_split
from fedstale.data.text import MAX_LENGTH, tokenize
from fedstale.models import build_model
from tests.helpers import CONFIGS, config, run

POSITIVE = ["good", "great", "excellent", "fine", "happy", "love", "nice", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "sad", "hate", "ugly", "worst"]
FILLER = ["the", "a", "movie", "film", "was", "it", "this", "plot", "actor", "story"]


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    """train.jsonl (400 lines) and test.jsonl (100): two sentiment words among filler."""
    folder = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    for split, count in (("train", 400), ("test", 100)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(count):
                label = int(rng.integers(2))
                words = list(rng.choice(FILLER, 6)) + list(rng.choice(POSITIVE if label else NEGATIVE, 2))
                rng.shuffle(words)
                handle.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return folder


def _config(folder, name="default", **overrides):
    settings = {
        "data__dataset": "text",
        "data__path": str(folder),
        "data__partitioner": "iid",
        "model__name": "bert_lora",
        "client__optimizer": "adamw",
        "client__lr": 0.01,
        **overrides,
    }
    return config(name, **settings)


def test_tokenizer_is_deterministic_and_padded():
    ids = tokenize("Good movie, GOOD plot")
    assert ids.shape == (MAX_LENGTH,) and ids.dtype == np.int64
    assert ids[0] == 1  # CLS
    assert ids[1] == ids[3] > 1 and ids[5:].tolist() == [0] * (MAX_LENGTH - 5)


def test_only_adapter_tensors_are_in_the_messages(text_folder):
    cfg = _config(text_folder)
    arrays = initial_arrays(cfg)  # what the strategies send and receive
    assert arrays.keys() and all(("lora_" in k) or ("classifier" in k) for k in arrays.keys())
    spec = load_split("text", 0.2, 0, path=str(text_folder)).spec
    model = build_model("bert_lora", spec)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sent = sum(int(np.prod(a.shape)) for a in arrays.values())
    assert sent == trainable
    assert sent < 0.03 * (trainable + model.base_parameters())
    # The frozen base is the same in every process (its own seed), the
    # adapters follow the run's seed.
    other = build_model("bert_lora", spec, seed=5)
    base = [p for p in model.parameters() if not p.requires_grad]
    other_base = [p for p in other.parameters() if not p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(base, other_base))
    with pytest.raises(RuntimeError, match="adapter state: missing"):
        model.load_state_dict({})


@pytest.mark.parametrize(("strategy", "updates"), [("default", 30), ("fedasync", 100)])
def test_lora_adapters_learn_with_fedbuff_and_fedasync(text_folder, learned, strategy, updates):
    """10 clients of 40 texts, 5 training at once, AdamW: from chance to ≥ 90%."""
    cfg = _config(
        text_folder,
        strategy,
        stop__num_updates=updates,
        evaluation__every=updates // 2,
        data__num_clients=10,
        strategy__concurrency=5,
        client__local_epochs=2,
    )
    result, _, recorder = run(cfg)
    learned.at_most("initial accuracy", recorder.evaluations[0]["accuracy"], 0.7)
    learned.at_least("final accuracy", recorder.evaluations[-1]["accuracy"], 0.9)
    assert set(result.arrays.keys()) == set(initial_arrays(cfg).keys())


def test_text_and_model_must_match():
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "default.yaml", {"model.name": "bert_lora"})
    assert "model.name: 'bert_lora' takes token ids; set data.dataset: text" in info.value.problems
    with pytest.raises(ConfigError) as info:
        load_config(CONFIGS / "default.yaml", {"data.dataset": "text", "data.path": "x"})
    assert "model.name: data.dataset text needs a text model (bert_lora)" in info.value.problems
