"""The allowlisted operators, one small function per (operator, since_version), grouped by
family. Importing this package registers them all in `models.onnx.registry`."""

from models.onnx.ops import elementwise, nn, reduce, shape

__all__ = ["elementwise", "nn", "reduce", "shape"]
