"""Serving benchmark entry point: ``.venv/bin/python bench/serving_bench.py --help``.

The benchmark itself is the package bench/serving/ (one module per part); this file keeps the documented
command working from anywhere.
"""

import sys
from pathlib import Path

# The repository root goes first: this script's own directory (bench/) would otherwise let bench/serving/
# shadow the top-level ``serving`` package the benchmark imports.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving.cli import main

if __name__ == "__main__":
    main()
