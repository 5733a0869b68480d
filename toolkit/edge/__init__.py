"""The runtime layer: onnx, onnxruntime, numpy and Pillow only. Never imports torch or toolkit.pytorch."""
