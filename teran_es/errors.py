"""The root of the errors teran-es raises on purpose.

Every error the package raises for something its user can fix (a setting, a file, a query,
a server that is down) derives from :class:`TeranError`, so a caller reports them all with
one ``except TeranError``; an error that is not one is a bug in teran-es. Where callers
catch an error by the built-in category it belongs to, the class keeps that base as well
(``class ConfigError(TeranError, ValueError)``).

This module imports nothing of teran-es: every other module may import it.
"""

from __future__ import annotations


class TeranError(Exception):
    """Base of the errors teran-es raises for input or state its user can fix."""


class ConfigError(TeranError, ValueError):
    """A configuration file, override or setting that does not fit the schema or the job."""


class DependencyError(TeranError, RuntimeError):
    """An optional package that the operation needs is not installed; the message names it."""
