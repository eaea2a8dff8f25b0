"""The package's own errors share one root, so the CLI reports them all with one clause."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import teran_es
from teran_es.errors import TeranError


def package_error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a teran_es module, by qualified name."""
    found = {}
    for module_info in pkgutil.walk_packages(teran_es.__path__, "teran_es."):
        module = importlib.import_module(module_info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_package_error_is_a_teran_error():
    classes = package_error_classes()
    assert "teran_es.config.ConfigError" not in classes  # re-exported there, defined in errors.py
    assert len(classes) >= 15
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, TeranError))
    assert strays == []


def test_errors_keep_the_builtin_category_callers_catch():
    from teran_es.config import ConfigError
    from teran_es.searcher import QueryError
    from teran_es.store import StoreError
    from teran_es.store.errors import StoreNotFoundError
    from teran_es.workdir import QuantizerMismatchError, WorkdirNotFoundError

    assert issubclass(ConfigError, ValueError) and issubclass(QueryError, ValueError)
    assert issubclass(QuantizerMismatchError, ValueError)
    assert issubclass(StoreNotFoundError, FileNotFoundError) and issubclass(WorkdirNotFoundError, FileNotFoundError)
    assert issubclass(StoreError, TeranError) and not issubclass(StoreError, ValueError)
