"""toolkit — train small image models in PyTorch, ship them as self-describing ONNX files,
quantize them and measure what each precision and provider costs."""

from toolkit._version import __version__

__all__ = ["__version__"]

# The Python API (toolkit/api.py), loaded on first use so that `import toolkit` stays light.
_API = ("bench", "classify", "evaluate", "export_module", "open_model", "optimize", "quantize", "wrap")


def __getattr__(name: str):
    if name in _API:
        from toolkit import api
        return getattr(api, name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
