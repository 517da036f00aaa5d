"""Errors that reach the user as one clear line (exit code 2)."""
from __future__ import annotations


class GanzipError(Exception):
    """Bad input or an unusable environment: the message says what to do.

    The CLI prints it as one line and exits with code 2; `--debug` shows the
    traceback as well. Library callers catch it like any exception.
    """

    exit_code = 2


class AssetMissingError(GanzipError):
    """A pretrained file (Inception, VGG-16, AlexNet) is not available locally."""


class NonFiniteLossError(GanzipError):
    """A loss term became NaN or inf during training."""
