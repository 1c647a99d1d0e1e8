"""The error of the embedded stack."""

from __future__ import annotations

__all__ = ["EmbeddedError"]


class EmbeddedError(RuntimeError):
    """A private server could not be started; the message says why and what to do."""
