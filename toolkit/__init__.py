"""toolkit — train small image models in PyTorch, ship them as self-describing ONNX files,
quantize them and measure what each precision and provider costs."""

__version__ = "0.1.0"
