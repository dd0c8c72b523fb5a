"""The one error hierarchy of af2.

Library code raises these; the ``af2`` command line prints an ``AF2Error`` as one line on stderr and
exits with code 2. Any other exception is a bug and keeps its traceback. Each class also derives from
the builtin it refines (``ValueError``, ``RuntimeError``) so callers that caught those keep working.
"""

from __future__ import annotations


class AF2Error(Exception):
    """Base of every error af2 raises on purpose: the message names the input, the problem and the fix."""


class ConfigError(AF2Error, ValueError):
    """A configuration, recipe or override is invalid."""


class AudioError(AF2Error, ValueError):
    """Audio that cannot be read, decoded or used."""


class ManifestError(AF2Error, ValueError):
    """A dataset manifest (or one of its entries) is malformed."""


class CheckpointError(AF2Error, ValueError):
    """A checkpoint or model folder is missing, damaged or does not fit the model."""


class RequestError(AF2Error, ValueError):
    """A user's request (question, sampling options, request file, HTTP body) is invalid."""


class DeviceError(AF2Error, RuntimeError):
    """The requested device or dtype is not available here."""


class SourceError(AF2Error, RuntimeError):
    """A data source is missing or reserved for evaluation."""
