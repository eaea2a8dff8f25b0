"""The one error the local server raises; its message always says what to do next."""

from __future__ import annotations

from teran_es.errors import TeranError


class LocalServerError(TeranError, RuntimeError):
    """The local server could not be fetched, started or stopped; the message says what to do."""
