"""``python -m bench.serving``: the serving benchmark (see bench/serving/__init__.py)."""

from bench.serving.cli import main

main()
