"""How a file name (or any text that carries one) is shown to a person or written as JSON,
and where progress lines go by default.

A POSIX file name is bytes: it may hold bytes that are not UTF-8 (Python keeps them as lone
surrogates, ``os.fsdecode``'s ``surrogateescape``), newlines and other control characters.
Printing such a name raw fails (``UnicodeEncodeError``) or forges output lines.
"""

from __future__ import annotations

import os
import sys
import unicodedata

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_path(name: str | bytes | os.PathLike[str], *, controls: bool = True) -> str:
    """``name`` as printable UTF-8: an undecodable byte becomes ``\\xNN`` and, with
    ``controls`` (terminal output), control and format characters become ``\\n``, ``\\t``,
    ``\\xNN`` or ``\\uNNNN``. JSON output passes ``controls=False`` (JSON escapes those itself).
    """
    text = os.fsdecode(name)
    if text.isprintable() and text.isascii():
        return text
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":  # a lone surrogate from elsewhere: not UTF-8 either
            out.append(f"\\u{ord(ch):04x}")
        elif controls and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100
                                            else f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return "".join(out)


class Detail(str):
    """A log line giving the reasons behind a choice (backend, decoder): the CLI shows it with
    ``-v/--verbose`` only; the short line before it says what was chosen."""


def log_stderr(msg: str) -> None:
    """The default sink of progress lines (backend choice, TensorRT builds, the decoder)."""
    print(msg, file=sys.stderr, flush=True)
