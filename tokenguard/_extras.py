"""The distribution's name on the package index and the install command of each extra,
in one place: every hint the library or its command prints names this project (the
index's ``tokenguard`` is another one)."""

from __future__ import annotations

import importlib

__all__ = ["DISTRIBUTION", "install_hint", "require"]

#: What ``pip install`` takes for this project (the import name stays ``tokenguard``).
DISTRIBUTION = "groq-tokenguard"


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, e.g. ``pip install 'groq-tokenguard[plot]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(module: str, extra: str, what: str) -> None:
    """Import ``module`` or raise a :class:`~tokenguard.ConfigurationError` saying that
    ``what`` needs the optional ``extra`` and how to install it."""
    from .errors import ConfigurationError

    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"{what} needs {module!r}, which comes with the optional {extra!r} extra: "
            f"{install_hint(extra)} (from a clone: pip install '.[{extra}]')"
        ) from None
