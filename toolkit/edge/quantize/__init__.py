"""Quantized variants."""
