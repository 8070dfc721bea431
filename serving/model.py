"""Load the ONNX model: verify its sha256 against report.json, pick providers and threads, warm up.

Tensor names, datatypes and shapes come from the ONNX Runtime session, never from report.json:
the graph is what actually runs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson

from serving.cpu import build_mismatch, describe, detect_isa
from serving.errors import ModelError
from serving.resources import available_cpus, cgroup_cpu_limit
from serving.settings import Settings

log = logging.getLogger("serving")

# ONNX Runtime element type -> (Open Inference Protocol datatype, numpy dtype).
ORT_TYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(uint16)": ("UINT16", np.dtype(np.uint16)),
    "tensor(uint32)": ("UINT32", np.dtype(np.uint32)),
    "tensor(uint64)": ("UINT64", np.dtype(np.uint64)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # Open Inference Protocol name, e.g. "FP32"
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # -1 where the graph leaves the dimension free

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(arg: Any) -> TensorSpec:
    if arg.type not in ORT_TYPES:
        raise ModelError(f"tensor {arg.name!r} has unsupported type {arg.type}")
    datatype, dtype = ORT_TYPES[arg.type]
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, dtype, shape)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_report(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "report.json"
    try:
        report = orjson.loads(path.read_bytes())
    except FileNotFoundError as e:
        raise ModelError(f"{path} is missing") from e
    except orjson.JSONDecodeError as e:
        raise ModelError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(report, dict):
        raise ModelError(f"{path} must hold a JSON object")
    digest = report.get("digest")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ModelError(f"{path}: 'digest' must be the sha256 hex of model.onnx, got {digest!r}")
    return report


def verify_artifact(model_dir: Path) -> dict[str, Any]:
    """Check model.onnx against report.json's digest; returns the report. Raises ModelError on mismatch."""
    report = read_report(model_dir)
    onnx_path = model_dir / "model.onnx"
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path} is missing")
    actual = sha256_file(onnx_path)
    if actual != report["digest"]:
        raise ModelError(f"{onnx_path} sha256 {actual} does not match report.json digest {report['digest']}")
    return report


def choose_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in available:
        raise ModelError(f"device=cuda asked for, but onnxruntime only has {available}")
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def cpus_from(cpus: int) -> str:
    """Where the CPU count came from, for the start-up log."""
    limit = cgroup_cpu_limit()
    if limit is not None and max(1, math.ceil(limit)) == cpus:
        return "the container CPU limit"
    return "the CPUs this process may use"


@dataclass(frozen=True)
class Threads:
    """How the model's runs use the CPUs: `workers` runs at once, each over `intra_op` threads."""

    workers: int
    intra_op: int
    cpus: int

    @classmethod
    def choose(cls, settings: Settings, providers: list[str]) -> Threads:
        # Concurrent single-threaded runs outdo one run spread over every core on CPU (docs/benchmarks.md);
        # one GPU runs one batch at a time well.
        cpus = available_cpus()
        workers = settings.compute_workers or (1 if providers[0] == "CUDAExecutionProvider" else cpus)
        return cls(workers, settings.intra_op_threads or max(1, cpus // workers), cpus)

    def describe(self, settings: Settings) -> str:
        def given(name: str) -> str:
            return f" (the {name} setting)" if getattr(settings, name) else ""

        return (f"{self.cpus} CPUs ({cpus_from(self.cpus)}), compute workers {self.workers}{given('compute_workers')}, "
                f"intra-op threads {self.intra_op}{given('intra_op_threads')}")


def log_runtime(settings: Settings, report: dict[str, Any], threads: Threads) -> None:
    """Once at start-up: the ISA and threads int8 latency depends on, and a model built for another CPU."""
    isa = detect_isa()
    log.info(
        "onnxruntime %s on %s, %s, inter-op %d",
        ort.__version__, describe(isa), threads.describe(settings), settings.inter_op_threads,
    )  # fmt: skip
    mismatch = build_mismatch(report.get("int8"), isa)
    if mismatch:
        log.warning("%s", mismatch)


class Model:
    """A verified, loaded ONNX model and its signature."""

    def __init__(self, settings: Settings):
        model_dir = settings.model_dir
        report = verify_artifact(model_dir)
        self.digest: str = report["digest"]
        report_name = report.get("name")
        self.name: str = settings.model_name or (report_name if isinstance(report_name, str) else model_dir.name)
        path, providers = str(model_dir / "model.onnx"), choose_providers(settings.device)
        self.threads = Threads.choose(settings, providers)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads.intra_op
        opts.inter_op_num_threads = settings.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.intra_op_spinning else "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if settings.intra_op_spinning else "0")
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own pybind types
            if settings.device != "auto" or providers == ["CPUExecutionProvider"]:
                raise ModelError(f"onnxruntime cannot load {path}: {e}") from e
            # auto on a GPU build without a usable GPU (e.g. a CPU node): CPU is what auto means there.
            log.warning("CUDA session failed (%s); falling back to CPU", e)
            try:
                self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as e2:
                raise ModelError(f"onnxruntime cannot load {path}: {e2}") from e2
        self.providers: list[str] = self.session.get_providers()
        log_runtime(settings, report, self.threads)
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self.input_by_name = {s.name: s for s in self.inputs}
        self.output_names = [s.name for s in self.outputs]
        # Rows of concurrent requests can be stacked only when every tensor's first dimension is free.
        self.batchable = all(len(s.shape) >= 1 and s.shape[0] == -1 for s in self.inputs + self.outputs)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        names = output_names or self.output_names
        results = self.session.run(names, feeds)
        return dict(zip(names, results, strict=True))

    def dummy_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        feeds = {}
        for s in self.inputs:
            shape = tuple((batch if i == 0 else 1) if d == -1 else d for i, d in enumerate(s.shape))
            if s.datatype == "BYTES":
                feeds[s.name] = np.full(shape, "", dtype=object)
            else:
                feeds[s.name] = np.zeros(shape, dtype=s.dtype)
        return feeds

    def warmup(self, runs: int, max_batch_size: int) -> float:
        """Run dummy batches (size 1 and the largest batch) so the first real request is not slow."""
        t0 = time.perf_counter()
        sizes = [1, max_batch_size] if self.batchable and max_batch_size > 1 else [1]
        for _ in range(runs):
            for b in sizes:
                self.run(self.dummy_feeds(b))
        return time.perf_counter() - t0

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_metadata() for s in self.inputs],
            "outputs": [s.as_metadata() for s in self.outputs],
            "parameters": {"digest": self.digest, "providers": self.providers},
        }
