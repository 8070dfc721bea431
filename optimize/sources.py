"""Model sources: detect the file format and load it without unpickling objects.

Formats: torch.export programs (.pt2), TorchScript (torch.jit.save), a state_dict
(torch.load with weights_only=True, in torch.save's zip format or its legacy one)
plus a `module:factory` that builds the architecture, and ONNX. Anything else is refused with a reason.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from optimize.errors import OptimizeError

Format = Literal["exported_program", "torchscript", "state_dict", "onnx"]


def detect_format(path: Path) -> Format:
    """Look inside the file (not at its suffix) and name its format."""
    if not path.is_file():
        raise OptimizeError(f"model file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise OptimizeError(f"model file '{path}' is empty")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip()  # CRC of every member: catches truncation and bit rot
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise OptimizeError(f"model file '{path}' is a corrupt or truncated archive: {exc}") from None
        if bad is not None:
            raise OptimizeError(f"model file '{path}' is corrupt: member '{bad}' fails its checksum")
        if any(n.endswith("/models/model.json") or n.endswith("/archive_format") for n in names):
            return "exported_program"
        if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("/data.pkl") for n in names):
            return "state_dict"
        raise OptimizeError(
            f"model file '{path}' is a zip archive but not a torch.export, TorchScript or torch.save file"
        )
    with path.open("rb") as fh:
        head = fh.read(2)
    if head[:1] == b"\x80":
        # A pickle: torch.save's legacy (pre-1.6, non-zip) format among them. Loaded as a state_dict only if
        # torch's weights-only unpickler takes it (load() says so otherwise); never fully unpickled.
        return "state_dict"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    raise OptimizeError(
        f"model file '{path}' has an unknown format "
        "(expected .pt2, TorchScript, state_dict .pt with --factory, or .onnx)"
    )


@dataclass
class Source:
    """A loaded model plus what the later stages need to know about it."""

    path: Path
    format: Format
    model: Any  # nn.Module, ScriptModule, ExportedProgram, or onnx.ModelProto
    input_names: list[str]
    # forward() arguments with a default (a Hugging Face model's token_type_ids, position_ids, ...): data may
    # leave off any trailing run of them, and the model is then run and exported without them.
    optional_inputs: frozenset[str] = frozenset()

    @property
    def is_torch(self) -> bool:
        return self.format != "onnx"

    def runner(self) -> Any:
        """A callable torch module for eager inference (baseline and probes)."""
        if self.format == "exported_program":
            return self.model.module()
        return self.model


def load_factory(spec: str) -> Any:
    """Resolve the --factory 'package.module:callable'."""
    return load_callable(spec, "factory")


def load_callable(spec: str, what: str) -> Any:
    """Resolve 'package.module:callable' (`what` names the setting in errors)."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise OptimizeError(f"{what} '{spec}' must look like 'package.module:callable'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise OptimizeError(f"{what} module '{mod_name}' cannot be imported: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise OptimizeError(f"{what} '{spec}': '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise OptimizeError(f"{what} '{spec}' is not callable")
    return obj


def load(path: Path, factory: str | None = None) -> Source:
    """Load a model file; torch is imported only for torch formats."""
    fmt = detect_format(path)
    if fmt == "onnx":
        return _load_onnx(path)
    import torch

    if fmt == "exported_program":
        try:
            ep = torch.export.load(str(path))
        except Exception as exc:
            raise OptimizeError(
                f"model file '{path}' cannot be loaded as a torch.export program: {_first(exc)}"
            ) from None
        names = [s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
        return Source(path, fmt, ep, names)
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export; still a source
                warnings.simplefilter("ignore", DeprecationWarning)
                ts = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise OptimizeError(f"model file '{path}' cannot be loaded as TorchScript: {_first(exc)}") from None
        ts.eval()
        names = [a.name for a in ts.forward.schema.arguments[1:]]
        return Source(path, fmt, ts, names)
    # state_dict: weights only, architecture from code the user names.
    if factory is None and zipfile.is_zipfile(path):
        raise OptimizeError(
            f"model file '{path}' is a state_dict; give --factory module:callable that builds the model"
        )
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        if not zipfile.is_zipfile(path):
            raise OptimizeError(
                f"model file '{path}' is a legacy pickle that holds more than weights; it is not loaded because "
                "unpickling runs arbitrary code (save a state_dict with torch.save, a TorchScript file or a "
                "torch.export .pt2)"
            ) from None
        raise OptimizeError(f"model file '{path}' cannot be loaded with weights_only=True: {_first(exc)}") from None
    if not isinstance(state, dict):
        raise OptimizeError(f"model file '{path}' holds a {type(state).__name__}, not a state_dict")
    if factory is None:
        raise OptimizeError(
            f"model file '{path}' is a state_dict; give --factory module:callable that builds the model"
        )
    module = load_factory(factory)()
    if not isinstance(module, torch.nn.Module):
        raise OptimizeError(f"factory '{factory}' returned {type(module).__name__}, not a torch.nn.Module")
    weights = model_weights(state, set(module.state_dict()), f"state_dict '{path}'", f"factory '{factory}'")
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise OptimizeError(f"state_dict '{path}' does not fit factory '{factory}': {_first(exc)}") from None
    module.eval()
    params = [
        p for p in inspect.signature(module.forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]  # fmt: skip
    optional = frozenset(p.name for p in params if p.default is not inspect.Parameter.empty)
    return Source(path, fmt, module, [p.name for p in params], optional)


# Where training scripts keep the model's weights inside a checkpoint dict, most common first.
CHECKPOINT_KEYS = ("model_state_dict", "state_dict", "model", "net", "module", "weights")
# Prefixes wrappers add to every key: DataParallel/DDP, torch.compile, Lightning's `self.model`.
KEY_PREFIXES = ("module.", "_orig_mod.", "model.", "net.")


def model_weights(checkpoint: dict[str, Any], expected: set[str], what: str, target: str) -> dict[str, Any]:
    """The model's weights in a bare state_dict or a training checkpoint
    (`{"model_state_dict": ..., "epoch": ...}`, Lightning's `{"state_dict": {"model.x": ...}}`), with
    wrapper prefixes stripped when that is what makes the keys fit `expected`."""
    candidates = [checkpoint] + [checkpoint[k] for k in CHECKPOINT_KEYS if isinstance(checkpoint.get(k), dict)]
    tried = []
    for candidate in candidates:
        tensors = {k: v for k, v in candidate.items() if isinstance(k, str) and hasattr(v, "shape")}
        if not tensors:
            continue
        fitted = _strip_prefixes(tensors, expected)
        if fitted is not None:
            return fitted
        tried.append(tensors)
    if not tried:
        keys = ", ".join(sorted(map(str, checkpoint))[:8])
        raise OptimizeError(f"{what} holds no tensors where weights are kept (top-level keys: {keys}); save "
                            "model.state_dict() or a dict with it under 'model_state_dict' or 'state_dict'")
    best = max(tried, key=lambda t: len(expected & set(t)))
    missing, unexpected = sorted(expected - set(best)), sorted(set(best) - expected)
    raise OptimizeError(f"{what} does not fit {target}: {len(missing)} missing keys (e.g. {missing[:3]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}); is it the right architecture?")


def _strip_prefixes(tensors: dict[str, Any], expected: set[str]) -> dict[str, Any] | None:
    """`tensors` keyed exactly as `expected`: as saved, or under one or two wrapper prefixes (keys outside
    the prefix, such as a Lightning module's loss buffers, are left out)."""
    frontier = [tensors]
    for _ in range(3):
        for current in frontier:
            if set(current) == expected:
                return current
        frontier = [inner for current in frontier for prefix in KEY_PREFIXES if (inner := _under(current, prefix))]
    return None


def _under(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_onnx(path: Path) -> Source:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=True)
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OptimizeError(f"model file '{path}' is not a valid ONNX model: {_first(exc)}") from None
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    return Source(path, "onnx", model, names)


def _first(exc: BaseException) -> str:
    """The first non-empty line of an exception (torch errors run to pages)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:300]
    return type(exc).__name__
