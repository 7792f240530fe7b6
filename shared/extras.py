"""The optional parts of callpipe (pyproject's extras): a clear stop where one is missing."""

from __future__ import annotations

import importlib
from collections.abc import Iterable


class MissingExtra(RuntimeError):
    """A service or command needs an extra that this install lacks."""


def require(extra: str, needed_by: str, modules: Iterable[str], hint: str = "") -> None:
    """Imports `modules` now, so a missing extra stops `needed_by` at its start, naming the
    extra, rather than with an ImportError in the middle of its first job."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise MissingExtra(
                f"{needed_by} needs callpipe's `{extra}` extra, which is not installed here "
                f"({error}): pip install 'callpipe[{extra}]'{hint}"
            ) from error
