"""OptimizedModel provider: cache hit vs cold build, and the cost of diff, measured in one run.

    .venv/bin/python -m bench.optimized_model_bench [--example text] [--recipe int8-dynamic]

Builds the example (`make examples` first) once cold into a fresh local store,
then calls create again with the same inputs (a cache hit: the build key maps
to the published digest) and diff on unchanged inputs, and prints the ratios.
Targets: cache hit <= 2% of the cold build; diff < 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from artifacts.store import sha256_file
from components.optimized_model import OptimizedModelProvider, tool_versions
from optimize.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def props(example: str, recipe: str, store: Path) -> dict:
    build = ROOT / "examples" / example / "build"
    files = {kind: build / f"{kind}.npz" for kind in ("validation", "calibration")}
    return {
        "modelName": example, "sourcePath": str(build / "model.pt"), "sourceSha256": sha256_file(build / "model.pt"),
        "factory": None, "recipe": load_recipe(recipe).to_dict(),
        "validationPath": str(files["validation"]), "validationSha256": sha256_file(files["validation"]),
        "calibrationPath": str(files["calibration"]), "calibrationSha256": sha256_file(files["calibration"]),
        "toolVersions": tool_versions(ROOT), "storeUri": str(store), "storeRegion": None, "storeEndpoint": None,
        "projectDir": str(ROOT),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="text")
    parser.add_argument("--recipe", default="int8-dynamic")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    provider = OptimizedModelProvider()
    with tempfile.TemporaryDirectory() as tmp:
        p = props(args.example, args.recipe, Path(tmp) / "store")
        start = time.perf_counter()
        cold = provider.create(p).outs
        cold_s = time.perf_counter() - start
        hits = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            warm = provider.create(dict(p)).outs
            hits.append(time.perf_counter() - start)
            assert warm["cacheHit"] and warm["digest"] == cold["digest"]
        provider.diff("id", cold, dict(p))  # warm the import
        diffs = []
        for _ in range(50):
            start = time.perf_counter()
            assert provider.diff("id", cold, dict(p)).changes is False
            diffs.append(time.perf_counter() - start)
    hit_s = statistics.median(hits)
    print(f"example={args.example} recipe={args.recipe} digest={cold['digest'][:12]}")
    print(f"cold build: {cold_s:.2f} s   cache hit (median of {args.repeats}): {hit_s * 1000:.1f} ms")
    print(f"cache hit / cold build = {hit_s / cold_s:.2e}  (target <= 2.00e-02)")
    print(f"diff on unchanged inputs: median {statistics.median(diffs) * 1000:.2f} ms, "
          f"max {max(diffs) * 1000:.2f} ms  (target < 50 ms)")


if __name__ == "__main__":
    main()
