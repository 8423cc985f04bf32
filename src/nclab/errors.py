"""The exceptions nclab raises for bad input, so that callers (and the CLI) can tell them from
internal failures.

Every error about what a user passed is an :class:`InputError` (a ``ValueError``) whose message
names the argument, the config key or the file and says what was expected; an argument of the
wrong type raises :class:`InputTypeError`, which is also a ``TypeError`` as Python's convention
asks. ``nclab`` exits with code 2 on these and lets anything else surface as what it is.
"""

from __future__ import annotations

__all__ = ["InputError", "InputRuntimeError", "InputTypeError", "renamed"]


class InputError(ValueError):
    """Bad input; the message names the argument and what was expected."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type; the message names the argument and the expected type."""


class InputRuntimeError(InputError, RuntimeError):
    """Bad input found while running the user's code (e.g. a tracked module that runs twice in
    one forward pass); a RuntimeError too, as where torch reports such things."""


def renamed(err: ValueError, names: dict[str, str]) -> InputError:
    """``err`` as an InputError whose leading argument name (the text before the first ``:``)
    is replaced by ``names[name]``: the Python keyword becomes the CLI flag a user typed."""
    text = str(err)
    name, sep, rest = text.partition(":")
    if sep and name in names:
        text = f"{names[name]}:{rest}"
    return InputError(text)
