"""Size and local-update cost of every model in fedstale's registry.

What is measured
----------------
For each model of :data:`fedstale.models.MODELS` on its natural input shapes
(``cnn``, ``mlp`` and the ResNets on MNIST-like (1, 28, 28); ``resnet8``,
``resnet20``, ``resnet18`` and ``squeezenet`` also on CIFAR-like (3, 32, 32);
10 classes):

- **parameters**: the values in the model's ``state_dict``, i.e. what one
  update carries (every parameter; for ``bert_lora`` only its LoRA adapters
  and head, measured on random token ids of length 32);
- **bytes/update**: what one update weighs on the wire. ``float32 bytes`` is
  parameters × 4 (the models have no buffers, so the ``state_dict`` is the
  parameters); ``ArrayRecord bytes`` is
  ``flwr.app.ArrayRecord(model.state_dict()).count_bytes()``, the record
  fedstale's ClientApp sends back, which adds a little per-tensor metadata;
- **s/update**: CPU wall time of one local update, i.e. one epoch of
  :func:`fedstale.client.training.train` (the loop the ClientApp runs) over
  ``--examples`` random examples of that shape (standard normal inputs,
  uniform labels) with batch size 32, SGD lr 0.01, momentum 0.9,
  cross-entropy, on ``--threads`` torch threads. Each update starts from a
  fresh copy of the same initial model (copying is not timed); the median of
  ``--repeats`` timed updates after one untimed warm-up update is printed.
  With ``--mixed-precision none bf16`` there is one column per mode
  (``client.mixed_precision``: the forward pass under ``torch.autocast``).
  On CPU bfloat16 is fast only with bfloat16 instructions (AVX512-BF16,
  AMX); ``fp16`` on CPU trains in float32 (its float16 convolutions were
  60-90x slower, see :func:`fedstale.client.training.precision_for`), so
  its column repeats ``none``'s.

The last line names the slowest local update (of the first mode).

Run: ``python simulations/bench_models.py [--examples 500 --threads 1]``
(a few minutes at the defaults on one thread, dominated by resnet18);
``--models cnn resnet8 --mixed-precision none bf16`` compares precisions.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time

import numpy as np
import torch
from flwr.app import ArrayRecord

from fedstale.client.training import MIXED_PRECISION, TrainSettings, train
from fedstale.data.spec import DatasetSpec
from fedstale.data.text import MAX_LENGTH, VOCAB_SIZE
from fedstale.models import MODELS, build_model

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
SYNTHETIC = (60,)  # FedProx's synthetic features (flat floats, not token ids)
NATURAL_SHAPES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "cnn": (MNIST,),
    "mlp": (MNIST,),
    "logreg": (SYNTHETIC,),
    "resnet8": (MNIST, CIFAR),
    "resnet20": (MNIST, CIFAR),
    "resnet18": (MNIST, CIFAR),
    "squeezenet": (CIFAR,),
    "bert_lora": ((MAX_LENGTH,),),
}
"""Shapes each model is measured on; a model missing here gets both."""

NUM_CLASSES = 10
SETTINGS = TrainSettings(epochs=1, batch_size=32, lr=0.01, momentum=0.9)


def time_update(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, repeats: int, precision: str = "none"
) -> float:
    """Median seconds of one local epoch over (x, y), after one warm-up epoch."""
    device = torch.device("cpu")
    settings = dataclasses.replace(SETTINGS, mixed_precision=precision)
    times = []
    for run in range(repeats + 1):
        fresh = copy.deepcopy(model)
        start = time.perf_counter()
        train(fresh, x, y, settings, device)
        if run > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per local epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates (median is printed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="models to measure"
    )
    parser.add_argument(
        "--mixed-precision", nargs="+", choices=MIXED_PRECISION, default=["none"],
        help="client.mixed_precision modes, one s/update column each",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    print(
        f"one local update = 1 epoch over {args.examples} random examples, batch "
        f"{SETTINGS.batch_size}, SGD lr {SETTINGS.lr} momentum {SETTINGS.momentum}; "
        f"{args.threads} torch thread(s), median of {args.repeats} after a warm-up"
    )
    columns = [
        "s/update" if mode == "none" else f"s/update {mode}" for mode in args.mixed_precision
    ]
    header = (
        f"{'model':<12}{'input':<14}{'parameters':>12}{'float32 bytes':>15}"
        f"{'ArrayRecord bytes':>19}" + "".join(f"{c:>16}" for c in columns)
    )
    print(header)
    print("-" * len(header))
    slowest: tuple[float, str, tuple[int, ...]] | None = None
    for name in args.models:
        for shape in NATURAL_SHAPES.get(name, (MNIST, CIFAR)):
            spec = DatasetSpec(name="bench", input_shape=shape, num_classes=NUM_CLASSES)
            model = build_model(name, spec, seed=args.seed)
            # What travels: the state_dict (all parameters; bert_lora: its adapters).
            params = sum(v.numel() for v in model.state_dict().values())
            record_bytes = ArrayRecord(model.state_dict()).count_bytes()
            if len(shape) == 1 and shape != SYNTHETIC:  # token ids
                x = rng.integers(1, VOCAB_SIZE, (args.examples, *shape), dtype=np.int64)
            else:
                x = rng.standard_normal((args.examples, *shape), dtype=np.float32)
            y = rng.integers(0, NUM_CLASSES, args.examples, dtype=np.int64)
            times = [time_update(model, x, y, args.repeats, mode) for mode in args.mixed_precision]
            print(
                f"{name:<12}{str(shape):<14}{params:>12,}{params * 4:>15,}"
                f"{record_bytes:>19,}" + "".join(f"{t:>16.3f}" for t in times)
            )
            seconds = times[0]
            if slowest is None or seconds > slowest[0]:
                slowest = (seconds, name, shape)
    if slowest is not None:
        seconds, name, shape = slowest
        print(
            f"slowest local update: {name} on {shape}: {seconds:.2f} s per "
            f"{args.examples} examples ({args.threads} thread(s))"
        )


if __name__ == "__main__":
    main()
