"""Smoke-test a model server through the Open Inference Protocol V2 REST API.

Usage: smoke_check.py BASE_URL MODEL [LABEL]   (run by scripts/ci/smoke.sh)
env: MODELSTACK_SMOKE_TIMEOUT  seconds to wait for readiness (default 120)

Checks, in order: GET /v2/health/ready is 200 (retried until the timeout), GET /v2/models/MODEL
is 200 and lists its inputs, POST /v2/models/MODEL/infer with zeros of each input's shape (dynamic
dims as 1) is 200 with outputs carrying data. Prints one line with the latency; any failure is one
line naming the check, the HTTP status and a snippet of the body, and exit 1. Stdlib only.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

REQUEST_TIMEOUT_S = 10.0
MAX_ELEMENTS = 10_000_000  # a zero tensor bigger than this is a shape problem, not a smoke test
ZERO = {"BOOL": False, "BYTES": ""}
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # refused, reset, timed out, garbled


class Failed(Exception):
    pass


def request(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def snippet(body: bytes) -> str:
    return " ".join(body.decode(errors="replace").split())[:200] or "(empty body)"


def wait_ready(base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            status, body = request("GET", f"{base}/v2/health/ready")
            if status == 200:
                return
            last = f"HTTP {status}: {snippet(body)}"
        except NETWORK_ERRORS as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise Failed(f"readiness check failed: GET /v2/health/ready not 200 within {timeout_s:g} s ({last})")
        time.sleep(1.0)


def get_json(what: str, method: str, url: str, path: str, body: bytes | None = None) -> Any:
    try:
        status, raw = request(method, url, body)
    except NETWORK_ERRORS as exc:
        raise Failed(f"{what} check failed: {method} {path}: {getattr(exc, 'reason', exc)}") from None
    if status != 200:
        raise Failed(f"{what} check failed: {method} {path}: HTTP {status}: {snippet(raw)}")
    try:
        return json.loads(raw)
    except ValueError:
        raise Failed(f"{what} check failed: {method} {path}: HTTP 200 but not JSON: {snippet(raw)}") from None


def zero_request(metadata: Any, path: str) -> dict[str, Any]:
    inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
    if not isinstance(inputs, list) or not inputs:
        found = snippet(json.dumps(metadata).encode())
        raise Failed(f"model metadata check failed: GET {path}: no 'inputs' in {found}")
    tensors = []
    for spec in inputs:
        name, datatype, shape = (spec.get(k) if isinstance(spec, dict) else None for k in ("name", "datatype", "shape"))
        if not (isinstance(name, str) and isinstance(datatype, str) and isinstance(shape, list)
                and all(isinstance(d, int) for d in shape)):
            raise Failed(f"model metadata check failed: GET {path}: input without name/datatype/shape: {spec!r}"[:300])
        dims = [1 if d < 0 else d for d in shape]  # batch 1; every dynamic dim 1
        if math.prod(dims) > MAX_ELEMENTS:
            raise Failed(f"model metadata check failed: input {name!r} of shape {shape} is too large to smoke-test")
        tensors.append({"name": name, "datatype": datatype, "shape": dims,
                        "data": [ZERO.get(datatype, 0)] * math.prod(dims)})
    return {"inputs": tensors}


def smoke(base: str, model: str, timeout_s: float) -> str:
    wait_ready(base, timeout_s)
    path = f"/v2/models/{urllib.parse.quote(model, safe='')}"
    payload = json.dumps(zero_request(get_json("model metadata", "GET", base + path, path), path)).encode()
    start = time.perf_counter()
    result = get_json("inference", "POST", f"{base}{path}/infer", f"{path}/infer", payload)
    latency_ms = (time.perf_counter() - start) * 1000
    outputs = result.get("outputs") if isinstance(result, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, dict) and isinstance(o.get("data"), list) for o in outputs):
        raise Failed(f"inference check failed: POST {path}/infer: no outputs with data in "
                     f"{snippet(json.dumps(result).encode())}")
    names = ", ".join(str(o.get("name")) for o in outputs)
    return f"ready, model {model}, infer 200 in {latency_ms:.1f} ms (outputs: {names})"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: smoke_check.py BASE_URL MODEL [LABEL]", file=sys.stderr)
        return 2
    base, model = argv[0].rstrip("/"), argv[1]
    label = argv[2] if len(argv) == 3 else base
    raw = os.environ.get("MODELSTACK_SMOKE_TIMEOUT", "120")
    try:
        timeout_s = float(raw)
        if not timeout_s > 0:
            raise ValueError
    except ValueError:
        print(f"smoke: MODELSTACK_SMOKE_TIMEOUT must be a positive number of seconds, got {raw!r}", file=sys.stderr)
        return 2
    try:
        line = smoke(base, model, timeout_s)
    except Failed as exc:
        print(f"smoke: {label}: {exc}", file=sys.stderr)
        return 1
    print(f"smoke: {label} ok: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
