"""Package the pretrained all-MiniLM-L6-v2 as users deploy it, with real English text to validate
and calibrate on (no training, no downloads; about half a minute on 2 cores).

Text: sentences split from the docstrings of a fixed list of standard-library modules, the same for
a given Python; validation and calibration sets are disjoint. Tokenized with the model's own
tokenizer.json, truncated and padded to SEQ_LEN tokens.

python -m examples.minilm.build --out examples/minilm/build [--force] writes
model.pt2 (torch.export, dynamic batch and sequence length; inputs input_ids and attention_mask, output [batch, 384]
unit vectors), validation.npz and calibration.npz (int64 input_ids and attention_mask, no labels)
and sentences.json (the text behind each set).
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from examples import _build

FILES = ("model.pt2", "validation.npz", "calibration.npz", "sentences.json")
SEQ_LEN = 64
VALIDATION, CALIBRATION = 256, 128
MODULES = (
    "argparse", "collections", "csv", "datetime", "decimal", "email", "fractions", "functools", "heapq",
    "http.client", "inspect", "json", "logging", "os", "pathlib", "pickle", "random", "shutil", "statistics",
    "string", "subprocess", "tarfile", "textwrap", "threading", "unittest", "urllib.parse", "zipfile",
)  # fmt: skip
# A sentence ends at . ! or ? followed by a capital letter.
SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _docstrings(name: str) -> Iterator[str]:
    module = importlib.import_module(name)
    yield inspect.getdoc(module) or ""
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", None) == module.__name__:  # defined here, not re-exported
            yield inspect.getdoc(obj) or ""


def _is_prose(sentence: str) -> bool:
    """A whole English sentence, not a code sample, a signature or a table row."""
    if not 6 <= len(sentence.split()) <= 60 or not sentence[0].isupper() or sentence[-1] not in ".!?":
        return False
    return sum(c.isalpha() or c == " " for c in sentence) / len(sentence) > 0.9


def sentences() -> list[str]:
    """Unique prose sentences from MODULES' docstrings, in a fixed order."""
    seen: dict[str, None] = {}
    for name in MODULES:
        for doc in _docstrings(name):
            for paragraph in re.split(r"\n\s*\n", doc):
                for sentence in SPLIT.split(" ".join(paragraph.split())):
                    if ">>>" not in sentence and _is_prose(sentence):
                        seen.setdefault(sentence)
    return list(seen)


def splits() -> tuple[list[str], list[str]]:
    """(validation, calibration): disjoint, drawn with a fixed seed from every module's sentences."""
    pool = sentences()
    if len(pool) < VALIDATION + CALIBRATION:  # e.g. python -OO strips docstrings
        raise RuntimeError(f"only {len(pool)} docstring sentences found, {VALIDATION + CALIBRATION} needed")
    random.Random(0).shuffle(pool)
    return pool[:VALIDATION], pool[VALIDATION : VALIDATION + CALIBRATION]


def tokenize(texts: list[str], path: Path | None = None, seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """The model's tokenizer.json, truncated and padded to seq_len: one int64 array per model input."""
    from tokenizers import Tokenizer

    from examples.minilm.model import model_path

    tokenizer = Tokenizer.from_file(str((path or model_path()) / "tokenizer.json"))
    tokenizer.enable_truncation(seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def write(out: Path) -> None:
    import torch

    from examples.minilm import model as minilm

    _build.seed_everything(0)
    validation, calibration = splits()
    val, cal = tokenize(validation), tokenize(calibration)
    for role, arrays in (("validation", val), ("calibration", cal)):
        np.savez(out / f"{role}.npz", input_ids=arrays["input_ids"], attention_mask=arrays["attention_mask"])
    (out / "sentences.json").write_text(json.dumps({"validation": validation, "calibration": calibration},
                                                   indent=1) + "\n")  # fmt: skip
    example = tuple(torch.from_numpy(val[k][:2]) for k in ("input_ids", "attention_mask"))
    minilm.export(minilm.pretrained(), example, out / "model.pt2")


if __name__ == "__main__":
    sys.exit(_build.main(__doc__ or "", "minilm", FILES, write))
