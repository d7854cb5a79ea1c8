"""The one error the build raises for problems a user can fix."""

from __future__ import annotations


class BuildError(ValueError):
    """A user-fixable problem with the encoder, decoder, tokenizer or output directory.

    The message names what was wrong, the value and how to fix it; the CLI prints it as is.
    """


__all__ = ["BuildError"]
