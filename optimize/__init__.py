"""modelstack's model-compression library: prune, export to ONNX, graph-optimize,
quantize, validate and benchmark. No Pulumi imports; heavy imports (torch,
onnxruntime) live inside the stage modules so `import optimize.recipe` stays light.

Entry points: optimize.pipeline.build() and `python -m optimize build`.
"""

__version__ = "0.1.0"
