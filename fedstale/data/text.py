"""A text-classification dataset from local files: ``data.dataset: text``.

``data.path`` is a folder with ``train.jsonl`` and ``test.jsonl``, one JSON
object per line with ``"text"`` (a string) and ``"label"`` (an integer from
0). Texts become token ids with a deterministic hashing tokenizer, so no
vocabulary or tokenizer is downloaded: a ``CLS`` id (1) first, then each
lowercase word (``\\w+``) as ``2 + crc32(word) mod (VOCAB_SIZE − 2)``, cut
or padded with 0 to ``MAX_LENGTH``. The number of classes is the largest label + 1.
"""

from __future__ import annotations

import json
import os
import re
import zlib

import numpy as np

from .spec import DatasetSpec, SplitData

VOCAB_SIZE = 4096
MAX_LENGTH = 32
PAD, CLS, FIRST_WORD = 0, 1, 2
"""Id 0 pads, id 1 starts every sequence (BERT classifies from the first
position, as from ``[CLS]``), words take the ids from 2."""
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> np.ndarray:
    """Token ids of ``text`` (int64, length ``MAX_LENGTH``, 0 = padding)."""
    words = _WORD.findall(text.lower())[: MAX_LENGTH - 1]
    ids = [CLS] + [FIRST_WORD + zlib.crc32(w.encode()) % (VOCAB_SIZE - FIRST_WORD) for w in words]
    return np.asarray(ids + [PAD] * (MAX_LENGTH - len(ids)), dtype=np.int64)


def _read(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    file = os.path.join(path, f"{split}.jsonl")
    if not os.path.isfile(file):
        raise ValueError(
            f"data.path: '{path}' has no {split}.jsonl (lines of {{\"text\": ..., \"label\": ...}})"
        )
    texts, labels = [], []
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts.append(tokenize(str(row["text"])))
                labels.append(int(row["label"]))
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"data.path: {file} line {number} is not {{\"text\": str, \"label\": int}} ({err})"
                ) from err
    if not texts:
        raise ValueError(f"data.path: {file} is empty")
    return np.stack(texts), np.asarray(labels, dtype=np.int64)


def load_text_split(path: str) -> SplitData:
    """Train and test token ids and labels from ``path`` (see module)."""
    if not path:
        raise ValueError("data.path: the text dataset is read from local files; set data.path")
    x_train, y_train = _read(path, "train")
    x_test, y_test = _read(path, "test")
    if min(y_train.min(), y_test.min()) < 0:
        raise ValueError("data.path: labels must be integers from 0")
    classes = int(max(y_train.max(), y_test.max())) + 1
    return SplitData(
        spec=DatasetSpec(name="text", input_shape=(MAX_LENGTH,), num_classes=classes),
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
    )
