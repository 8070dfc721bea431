"""ONNX Runtime inference server speaking the Open Inference Protocol v2 (KServe v2) over REST.

Runs inside the serving image: ``python -m serving --model DIR --port N [--name NAME]``.
It never imports Pulumi; the ServingImage component only copies this package into a build context
(see :mod:`serving.context`).
"""

__version__ = "0.1.0"
