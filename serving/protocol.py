"""Open Inference Protocol v2 (and KServe v1 ``instances``) JSON <-> numpy, with every check a client can fail.

v2 requests may use the binary tensor data extension (Triton's and KServe's): the body is the JSON
request (``Inference-Header-Content-Length`` bytes) followed by the raw bytes of each input whose
``parameters`` give a ``binary_data_size``, in input order; outputs come back the same way when asked
(``binary_data_output`` for all, or an output's ``binary_data``). Validation happens here, before a
request is queued, so one bad request can never poison a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.model import Model, TensorSpec
from serving.tensor_bytes import from_bytes, to_bytes

DATATYPES = frozenset(
    ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]
)
# numpy kinds a JSON array may parse to for each target kind: ints may feed floats, never the reverse.
_ACCEPTED_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_MAX_ERROR_LIST = 10


@dataclass
class InferRequest:
    id: str | None
    feeds: dict[str, np.ndarray]
    rows: int  # size of the batch dimension (1 when the model cannot batch)
    output_names: list[str]
    binary_outputs: frozenset[str] = frozenset()  # outputs answered as raw bytes (binary extension)


def parse_json(body: bytes | memoryview) -> Any:
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"malformed JSON: {e}") from None


def _names(items: Any) -> str:
    items = sorted(items)
    more = f" (+{len(items) - _MAX_ERROR_LIST} more)" if len(items) > _MAX_ERROR_LIST else ""
    return ", ".join(repr(i) for i in items[:_MAX_ERROR_LIST]) + more


def check_shape(spec: TensorSpec, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {spec.name!r}: 'shape' must be a list of integers")
    if len(shape) != len(spec.shape) or any(m != -1 and d != m for d, m in zip(shape, spec.shape, strict=False)):
        raise BadRequest(f"input {spec.name!r}: shape {shape} does not match the model's {list(spec.shape)}")
    if any(d < 1 for d in shape):
        raise BadRequest(f"input {spec.name!r}: shape {shape} has a dimension below 1")
    return tuple(shape)


def check_datatype(spec: TensorSpec, datatype: Any) -> None:
    if datatype not in DATATYPES:
        raise BadRequest(f"input {spec.name!r}: unknown datatype {datatype!r}; expected one of {sorted(DATATYPES)}")
    if datatype != spec.datatype:
        raise BadRequest(f"input {spec.name!r}: datatype {datatype} given, the model expects {spec.datatype}")


def to_array(
    spec: TensorSpec, data: Any, shape: tuple[int, ...] | None, budget: int, allow_nonfinite: bool
) -> np.ndarray:
    """JSON data (flat or nested) -> array of the model's dtype; ``shape`` None takes it from the nesting (v1)."""
    if shape is not None:
        n = math.prod(shape)
        if n > budget:
            raise BadRequest(
                f"input {spec.name!r}: shape {list(shape)} has {n} elements, more than the {budget} allowed"
            )
    if not isinstance(data, list):
        raise BadRequest(f"input {spec.name!r}: 'data' must be a JSON array")
    if len(data) > budget:  # cheap early refusal before numpy copies a huge list
        raise BadRequest(f"input {spec.name!r}: {len(data)} elements, more than the {budget} allowed")
    try:
        arr = np.array(data, dtype=object if spec.datatype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(f"input {spec.name!r}: 'data' is not a regular (rectangular) array of numbers") from None
    if spec.datatype == "BYTES":
        if not all(isinstance(v, str) for v in arr.flat):
            raise BadRequest(f"input {spec.name!r}: BYTES data must be strings")
    else:
        kind = spec.dtype.kind
        if arr.size and arr.dtype.kind not in _ACCEPTED_KINDS[kind]:
            got = {"b": "booleans", "U": "strings", "O": "mixed or out-of-range values", "f": "non-integers"}
            raise BadRequest(
                f"input {spec.name!r}: data holds {got.get(arr.dtype.kind, arr.dtype.kind)}, "
                f"not valid for datatype {spec.datatype}"
            )
        if kind in "iu" and arr.size:
            info = np.iinfo(spec.dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise BadRequest(f"input {spec.name!r}: values out of range for datatype {spec.datatype}")
    if shape is None:
        if arr.size > budget:
            raise BadRequest(f"input {spec.name!r}: {arr.size} elements, more than the {budget} allowed")
        shape = arr.shape
        check_shape(spec, list(shape))
    elif arr.size != math.prod(shape):
        raise BadRequest(
            f"input {spec.name!r}: data has {arr.size} elements but shape {list(shape)} needs {math.prod(shape)}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(spec.dtype, copy=False).reshape(shape)
    if spec.dtype.kind == "f" and not allow_nonfinite and not np.isfinite(out).all():
        raise BadRequest(f"input {spec.name!r}: NaN or infinity (or a value too large for {spec.datatype})")
    return out


def batch_rows(model: Model, feeds: dict[str, np.ndarray]) -> int:
    if not model.batchable:
        return 1
    sizes = {a.shape[0] for a in feeds.values()}
    if len(sizes) != 1:
        raise BadRequest(f"inputs disagree on the batch (first) dimension: {sorted(sizes)}")
    return sizes.pop()


def check_names(model: Model, given: list[str]) -> None:
    expected = set(model.input_by_name)
    missing, extra = expected - set(given), set(given) - expected
    if extra:
        raise BadRequest(f"unknown input(s) {_names(extra)}; the model takes {_names(expected)}")
    if missing:
        raise BadRequest(f"missing input(s) {_names(missing)}")
    if len(given) != len(set(given)):
        raise BadRequest("an input is given more than once")


def _parameters(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'parameters' must be a JSON object")
    return value


def _binary_size(spec: TensorSpec, parameters: dict[str, Any]) -> int | None:
    size = parameters.get("binary_data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise BadRequest(f"input {spec.name!r}: 'binary_data_size' must be a non-negative integer")
    return size


def decode_infer(
    body: Any, model: Model, max_elements: int, allow_nonfinite: bool, binary: memoryview | None = None
) -> InferRequest:
    """A v2 request; ``binary`` is what follows the JSON when the binary extension is used."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' array")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty array of tensors")
    if not all(isinstance(t, dict) for t in inputs):
        raise BadRequest("each entry of 'inputs' must be an object with name, shape, datatype and data")
    names = [t.get("name") for t in inputs]
    if not all(isinstance(n, str) for n in names):
        raise BadRequest("each input needs a string 'name'")
    check_names(model, names)
    feeds: dict[str, np.ndarray] = {}
    budget, offset = max_elements, 0
    for t in inputs:
        spec = model.input_by_name[t["name"]]
        check_datatype(spec, t.get("datatype"))
        shape = check_shape(spec, t.get("shape"))
        size = (
            _binary_size(spec, _parameters(f"input {spec.name!r}", t.get("parameters"))) if "parameters" in t else None
        )
        if size is None:
            if "data" not in t:
                raise BadRequest(f"input {spec.name!r}: 'data' is missing")
            feeds[spec.name] = to_array(spec, t["data"], shape, budget, allow_nonfinite)
        else:
            if "data" in t:
                raise BadRequest(f"input {spec.name!r}: both 'data' and 'binary_data_size' given; send one")
            if binary is None:
                raise BadRequest(
                    f"input {spec.name!r}: 'binary_data_size' given, but the request has no "
                    "Inference-Header-Content-Length header saying where its binary data starts"
                )
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {spec.name!r}: binary_data_size {size} runs past the body "
                    f"({len(binary) - offset} bytes of binary data left)"
                )
            feeds[spec.name] = from_bytes(spec, shape, binary[offset : offset + size], budget, allow_nonfinite)
            offset += size
        budget -= feeds[spec.name].size
    if binary is not None and offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    names, binary_outputs = requested_outputs(model, body.get("outputs"), body.get("parameters"))
    return InferRequest(request_id, feeds, batch_rows(model, feeds), names, binary_outputs)


def requested_outputs(model: Model, outputs: Any, parameters: Any) -> tuple[list[str], frozenset[str]]:
    """The outputs asked for, and those to answer as raw bytes."""
    everything = _parameters("request", parameters).get("binary_data_output", False)
    if not isinstance(everything, bool):
        raise BadRequest("'binary_data_output' must be true or false")
    if outputs is None:
        return model.output_names, frozenset(model.output_names if everything else ())
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be an array of objects with a string 'name'")
    names = [o["name"] for o in outputs]
    unknown = set(names) - set(model.output_names)
    if unknown:
        raise BadRequest(f"unknown output(s) {_names(unknown)}; the model produces {_names(model.output_names)}")
    binary = set(names) if everything else set()
    for o in outputs:
        p = _parameters(f"output {o['name']!r}", o.get("parameters"))
        if p.get("classification"):
            raise BadRequest(f"output {o['name']!r}: the 'classification' extension is not supported")
        flag = p.get("binary_data", everything)
        if not isinstance(flag, bool):
            raise BadRequest(f"output {o['name']!r}: 'binary_data' must be true or false")
        (binary.add if flag else binary.discard)(o["name"])
    return names, frozenset(binary)


def _data(arr: np.ndarray) -> Any:
    # orjson writes numeric arrays natively (fast); string tensors go through lists.
    return arr.tolist() if arr.dtype == object else np.ascontiguousarray(arr).reshape(-1)


def encode_infer(model: Model, req: InferRequest, outputs: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[bytes]]:
    """The response document and, for outputs asked for in binary, their raw bytes in output order."""
    by_name = {s.name: s for s in model.outputs}
    tensors, chunks = [], []
    for n in req.output_names:
        arr = outputs[n]
        tensor: dict[str, Any] = {"name": n, "datatype": by_name[n].datatype, "shape": list(arr.shape)}
        if n in req.binary_outputs:
            chunks.append(to_bytes(arr))
            tensor["parameters"] = {"binary_data_size": len(chunks[-1])}
        else:
            tensor["data"] = _data(arr)
        tensors.append(tensor)
    response: dict[str, Any] = {"model_name": model.name, "outputs": tensors}
    if req.id is not None:
        response["id"] = req.id
    return response, chunks


def decode_predict(body: Any, model: Model, max_elements: int, allow_nonfinite: bool) -> InferRequest:
    """KServe v1: ``{"instances": [...]}``; each instance is one row, or a {input name: row} object."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise BadRequest("request body must be a JSON object with a non-empty 'instances' array")
    instances = body["instances"]
    if not model.batchable:
        raise BadRequest("this model has no batch dimension; use the v2 /infer endpoint")
    if len(model.inputs) == 1 and not isinstance(instances[0], dict):
        columns = {model.inputs[0].name: instances}
    else:
        if not all(isinstance(i, dict) for i in instances):
            raise BadRequest("with several model inputs, each instance must be an object keyed by input name")
        check_names(model, list(instances[0]))
        columns = {}
        for name in model.input_by_name:
            try:
                columns[name] = [i[name] for i in instances]
            except KeyError:
                raise BadRequest(f"an instance lacks input {name!r}") from None
        if any(len(i) != len(model.inputs) for i in instances):
            raise BadRequest(f"instances must hold exactly the inputs {_names(model.input_by_name)}")
    feeds: dict[str, np.ndarray] = {}
    budget = max_elements
    for name, data in columns.items():
        feeds[name] = to_array(model.input_by_name[name], data, None, budget, allow_nonfinite)
        budget -= feeds[name].size
    return InferRequest(None, feeds, batch_rows(model, feeds), model.output_names)


def encode_predict(model: Model, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    # orjson writes numeric arrays nested; string tensors go through lists.
    cols = {n: a.tolist() if a.dtype == object else a for n, a in outputs.items()}
    if len(model.output_names) == 1:
        return {"predictions": cols[model.output_names[0]]}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{n: cols[n][i] for n in model.output_names} for i in range(rows)]}
