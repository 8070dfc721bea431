"""Package the pretrained all-MiniLM-L6-v2 as users deploy it, with real English text to validate
and calibrate on (no training, no downloads; about half a minute on 2 cores).

Text: sentences split from the docstrings of a fixed list of standard-library modules, the same for
a given Python; validation, calibration and training sets are disjoint. Tokenized with the model's own
tokenizer.json, truncated and padded to SEQ_LEN tokens.

python -m examples.minilm.build --out examples/minilm/build [--force] writes
model.pt2 (torch.export, dynamic batch and sequence length; inputs input_ids and attention_mask, output [batch, 384]
unit vectors), model_state.pt (the same weights as a state_dict, for
--factory examples.minilm.model:architecture: what distillation derives a student from),
validation.npz, calibration.npz and training.npz (int64 input_ids and attention_mask, no labels; training
holds every sentence the other two leave and those of TRAINING_MODULES) and sentences.json (the text
behind each set).
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

FILES = ("model.pt2", "model_state.pt", "validation.npz", "calibration.npz", "training.npz", "sentences.json")
SEQ_LEN = 64
VALIDATION, CALIBRATION = 256, 128
MODULES = (
    "argparse", "collections", "csv", "datetime", "decimal", "email", "fractions", "functools", "heapq",
    "http.client", "inspect", "json", "logging", "os", "pathlib", "pickle", "random", "shutil", "statistics",
    "string", "subprocess", "tarfile", "textwrap", "threading", "unittest", "urllib.parse", "zipfile",
)  # fmt: skip
# Training rows only (distillation: optimize.finetune): other modules' docstrings, so no sentence of the
# validation set is trained on.
TRAINING_MODULES = (
    "abc", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "concurrent.futures", "configparser",
    "contextlib", "copy", "dataclasses", "difflib", "doctest", "enum", "filecmp", "fnmatch", "ftplib", "getopt",
    "gettext", "glob", "gzip", "hashlib", "hmac", "html.parser", "imaplib", "importlib", "io", "ipaddress",
    "itertools", "locale", "lzma", "mailbox", "mimetypes", "multiprocessing", "netrc", "numbers", "operator",
    "optparse", "pdb", "platform", "plistlib", "poplib", "pprint", "profile", "queue", "reprlib", "sched",
    "secrets", "selectors", "shelve", "shlex", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "struct",
    "sysconfig", "tempfile", "timeit", "tokenize", "trace", "traceback", "types", "typing", "uuid", "warnings",
    "wave", "weakref", "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "zipimport", "zoneinfo",
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


def sentences(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Unique prose sentences from the modules' docstrings, in a fixed order."""
    seen: dict[str, None] = {}
    for name in modules:
        for doc in _docstrings(name):
            for paragraph in re.split(r"\n\s*\n", doc):
                for sentence in SPLIT.split(" ".join(paragraph.split())):
                    if ">>>" not in sentence and _is_prose(sentence):
                        seen.setdefault(sentence)
    return list(seen)


def splits() -> tuple[list[str], list[str], list[str]]:
    """(validation, calibration, training): disjoint, drawn with a fixed seed from MODULES' sentences;
    training is every sentence they leave, and TRAINING_MODULES' sentences that are not in validation."""
    pool = sentences()
    if len(pool) < VALIDATION + CALIBRATION:  # e.g. python -OO strips docstrings
        raise RuntimeError(f"only {len(pool)} docstring sentences found, {VALIDATION + CALIBRATION} needed")
    random.Random(0).shuffle(pool)
    validation, calibration = pool[:VALIDATION], pool[VALIDATION : VALIDATION + CALIBRATION]
    held_out = set(validation)
    more = [s for s in sentences(TRAINING_MODULES) if s not in held_out and s not in pool]
    return validation, calibration, pool[VALIDATION + CALIBRATION :] + more


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
    texts = dict(zip(("validation", "calibration", "training"), splits(), strict=True))
    arrays = {role: tokenize(lines) for role, lines in texts.items()}
    for role, tokens in arrays.items():
        np.savez(out / f"{role}.npz", input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    (out / "sentences.json").write_text(json.dumps(texts, indent=1) + "\n")
    example = tuple(torch.from_numpy(arrays["validation"][k][:2]) for k in ("input_ids", "attention_mask"))
    model = minilm.pretrained()
    minilm.export(model, example, out / "model.pt2")
    torch.save(model.state_dict(), out / "model_state.pt")  # with --factory examples.minilm.model:architecture


if __name__ == "__main__":
    sys.exit(_build.main(__doc__ or "", "minilm", FILES, write))
