"""Lay out the serving image's Docker build context (shared by the ServingImage component and its tests).

Pure file work with the standard library only: the Pulumi program imports this, so no onnxruntime here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# The locks (pinned, with hashes), not their *.in inputs.
REQUIREMENTS = ("requirements.txt", "requirements-gpu.txt")
MARKER = ".modelstack-build-context"


class ContextError(ValueError):
    """The model directory or the output directory cannot be used."""


def _check_model(model_dir: Path) -> None:
    onnx_path, report_path = model_dir / "model.onnx", model_dir / "report.json"
    for p in (onnx_path, report_path):
        if not p.is_file():
            raise ContextError(f"{p} is missing")
    try:
        digest = json.loads(report_path.read_text()).get("digest")
    except (ValueError, AttributeError) as e:
        raise ContextError(f"{report_path} is not a JSON object with a 'digest'") from e
    with onnx_path.open("rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != actual:
        raise ContextError(f"{onnx_path} sha256 {actual} does not match report.json digest {digest!r}")


def _prepare(out_dir: Path) -> None:
    if out_dir.exists():
        if (out_dir / MARKER).is_file():  # one we made earlier: safe to replace
            shutil.rmtree(out_dir)
        elif any(out_dir.iterdir()):
            raise ContextError(f"{out_dir} is not empty and was not made by assemble(); refusing to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)


def source_key(wheelhouse: str | Path | None = None) -> str:
    """A short digest of everything ``assemble`` copies besides the model: the Dockerfile, the locks, the
    package's code and the wheelhouse's file names and sizes (wheels are checked against the locks' hashes
    at build time). Two contexts for one model with the same key hold the same files."""
    h = hashlib.sha256()
    sources = [PACKAGE_DIR / "Dockerfile", *(PACKAGE_DIR / name for name in REQUIREMENTS),
               *sorted(PACKAGE_DIR.glob("*.py"))]
    for path in sources:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    if wheelhouse is not None:
        for whl in sorted(Path(wheelhouse).glob("*.whl")):
            h.update(f"{whl.name}\0{whl.stat().st_size}\0".encode())
    return h.hexdigest()[:12]


def assemble(model_dir: str | Path, out_dir: str | Path, wheelhouse: str | Path | None = None) -> Path:
    """Copy Dockerfile, requirements, the serving package, the model and optional wheels into ``out_dir``.

    Layout: ``Dockerfile``, ``requirements*.txt``, ``serving/*.py``, ``model/{model.onnx,report.json}``,
    ``wheels/*.whl`` (empty without a wheelhouse). Files are copied, never linked. Returns ``out_dir``.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_model(model_dir)
    _prepare(out_dir)
    shutil.copyfile(PACKAGE_DIR / "Dockerfile", out_dir / "Dockerfile")
    for name in REQUIREMENTS:
        shutil.copyfile(PACKAGE_DIR / name, out_dir / name)
    (out_dir / "serving").mkdir()
    for src in sorted(PACKAGE_DIR.glob("*.py")):
        shutil.copyfile(src, out_dir / "serving" / src.name)
    (out_dir / "model").mkdir()
    for name in ("model.onnx", "report.json"):
        shutil.copyfile(model_dir / name, out_dir / "model" / name)
    wheels = out_dir / "wheels"
    wheels.mkdir()
    (wheels / ".keep").write_text("")  # COPY wheels/ needs the directory even when empty
    if wheelhouse is not None:
        found = sorted(Path(wheelhouse).glob("*.whl"))
        if not found:
            raise ContextError(f"wheelhouse {wheelhouse} has no .whl files")
        for whl in found:
            shutil.copyfile(whl, wheels / whl.name)
    (out_dir / MARKER).write_text("made by serving.context.assemble\n")
    return out_dir
