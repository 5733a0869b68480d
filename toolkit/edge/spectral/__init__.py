"""The spectral ops (fft-lowpass, fft-spectrum, walsh-compress): their math and float64
references (ops.py), their ONNX graphs (graphs.py), and `toolkit transform` (transforms.py)."""
