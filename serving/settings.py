"""Server settings: CLI flags override environment variables (prefix ``MODELSTACK_SERVING_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MODELSTACK_SERVING_"


class Settings(BaseSettings):
    """Everything the server can be told. Each field is also read from ``MODELSTACK_SERVING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    model_dir: Path = Field(
        default=Path("/srv/model"),
        description="Directory holding model.onnx and report.json (the report's digest is checked before serving).",
    )
    model_name: str | None = Field(
        default=None,
        description="Name the model is served under; default: report.json 'name', else the directory name.",
    )
    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port to listen on (0 picks a free one).")
    grpc_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve the Open Inference Protocol's gRPC API (inference.GRPCInferenceService) on this "
        "port (0 picks a free one); unset: REST only. Same model, batcher, limits and metrics as REST.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Execution provider: 'cuda' requires CUDAExecutionProvider, 'auto' uses it when the "
        "installed onnxruntime has it, 'cpu' never does.",
    )
    compute_workers: int = Field(
        default=0,
        ge=0,
        description="Batches run at once, each on its own thread over the one session (Triton's instance "
        "count); 0: one per CPU the container may use (cgroup cpu.max) on CPU, 1 on CUDA.",
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="ONNX Runtime intra-op threads each run uses; 0: the container's CPUs shared among the "
        "compute workers (at least 1).",
    )
    inter_op_threads: int = Field(default=1, ge=1, description="ONNX Runtime inter-op threads.")
    intra_op_spinning: bool = Field(
        default=False,
        description="Let ORT worker threads busy-wait between ops. Off by default: spinning burns the "
        "container's CPU quota and starves the HTTP event loop.",
    )
    warmup_runs: int = Field(default=3, ge=0, description="Inference runs on dummy input before reporting ready.")
    max_batch_size: int = Field(
        default=8,
        ge=1,
        description="Dynamic batching: most rows concatenated into one session.run (1 turns batching off).",
    )
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=10_000.0,
        description="Dynamic batching: longest a request waits for others to fill a batch (Triton's "
        "max_queue_delay_microseconds, in ms). 0 still batches whatever queued while the model was busy.",
    )
    max_queue_size: int = Field(
        default=256, ge=1, description="Requests waiting for the model at most; beyond that the server answers 503."
    )
    inline_compute_ms: float = Field(
        default=0.3,
        ge=0.0,
        description="Run session.run on the event-loop thread, skipping the hand-off to the compute thread "
        "(tens of microseconds), while its recent average time stays below this; 0 always hands off.",
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds sent with 503 on a full queue.")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body; larger bodies get 413 unread."
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="Longest time to receive a request body; slower (or stalled) clients get 408.",
    )
    max_elements: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Most tensor elements one request may carry across its inputs."
    )
    allow_nonfinite: bool = Field(default=False, description="Accept NaN/inf in floating point inputs.")
    graceful_timeout_s: float = Field(
        default=25.0,
        ge=0.0,
        description="After SIGTERM, how long in-flight requests may take before the process exits anyway; "
        "keep it below the pod's terminationGracePeriodSeconds.",
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0.0,
        description="After SIGTERM, keep accepting requests (while reporting not ready, each response with "
        "`Connection: close`) this long before draining, so load balancers stop sending traffic first and "
        "keep-alive clients move to another server.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    access_log: bool = Field(default=False, description="Log every request (costs latency).")
    fault_error_ratio: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="For tests only: answer this share of inference requests with 500, as a misbehaving "
        "model would, so that a canary's analysis and its rollback can be exercised. Never set it in production.",
    )
