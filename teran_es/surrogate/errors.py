"""Errors of the first stage: a sample it cannot be fitted on, a saved file it cannot read."""

from __future__ import annotations

from teran_es.errors import TeranError


class FitError(TeranError, ValueError):
    """A sample the first stage cannot be fitted on (too few vectors for the settings, or
    degenerate ones); the message says what to change."""


class EncoderFileError(TeranError, ValueError):
    """A file that is not a saved first-stage encoder, or one that was altered since."""
