"""Audio Flamingo 2: a faithful, fast, tested re-implementation.

    import af2
    model = af2.load("path/or/hub-id", device="cpu", dtype="float32")
    model.ask("clip.wav", "What is happening?").text
"""

__version__ = "0.1.0"

_LAZY = {"load": "af2.inference", "AF2": "af2.inference", "Answer": "af2.inference",
         "AF2Config": "af2.config", "AF2Model": "af2.model.af2"}


def __getattr__(name: str):
    # Importing torch and transformers takes seconds; `af2 --help` should not pay for it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'af2' has no attribute {name!r}")
