"""Write an Open Inference Protocol V2 infer request for rows of a model's validation data: the body of
the curl line `make up` prints, and of the e2e's in-cluster checks.

    python -m scripts.sample_request MODEL_DIR DATA.npz OUT.json [--rows N]   (from the repository root)

MODEL_DIR holds the served model.onnx (an artifact of the store); DATA is the stack's validation .npz.
Tensor names and datatypes come from the ONNX Runtime session, as the server reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from optimize.data import load
from optimize.errors import OptimizeError
from serving.model import ORT_TYPES


def request(model: Path, data: Path, rows: int = 1) -> dict[str, Any]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    dataset = load(data, [i.name for i in inputs], "validation")
    feeds = dataset.rows(0, rows)
    body = []
    for spec in inputs:
        if spec.name not in feeds:  # an optional trailing input the data leaves out
            continue
        datatype, dtype = ORT_TYPES[spec.type]
        arr = np.ascontiguousarray(feeds[spec.name], dtype=dtype)
        body.append({"name": spec.name, "datatype": datatype, "shape": list(arr.shape),
                     "data": arr.ravel().tolist()})
    return {"inputs": body}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=1)
    args = parser.parse_args(argv)
    model = args.model_dir / "model.onnx"
    if not model.is_file():
        print(f"sample_request: {model} does not exist", file=sys.stderr)
        return 1
    try:
        body = request(model, args.data, args.rows)
    except OptimizeError as exc:
        print(f"sample_request: {exc}", file=sys.stderr)
        return 1
    tmp = args.out.with_name(f".{args.out.name}.{os.getpid()}")
    tmp.write_text(json.dumps(body))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
