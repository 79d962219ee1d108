"""Text that every output can encode: names from files and directories, escaped one way everywhere.

A directory named with bytes that are not UTF-8 (``run-caf\\xe9`` in Latin-1) reaches Python as
lone surrogates (``surrogateescape``); JSON escapes can spell lone surrogates in tensor names
too. Neither can be written as UTF-8, so CSV, JSON, HTML and the terminal all show them as the
same backslash escape: ``\\xe9`` for an undecodable byte, ``\\udXXX`` for any other surrogate.
"""

from __future__ import annotations

import codecs

ERRORS = "dora-diag-escape"   # the codec error handler below, for str.encode


def escape_char(c: str) -> str:
    """The printable escape of one character: ``\\xNN`` for a byte kept by surrogateescape."""
    if 0xDC80 <= ord(c) <= 0xDCFF:
        return f"\\x{ord(c) - 0xDC00:02x}"
    return repr(c)[1:-1]


def _escape(err: UnicodeError):
    if not isinstance(err, UnicodeEncodeError):
        raise err
    return "".join(escape_char(c) for c in err.object[err.start:err.end]), err.end


codecs.register_error(ERRORS, _escape)


def encodable(text: str) -> str:
    """``text`` with every character UTF-8 cannot encode replaced by its escape."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", ERRORS).decode("utf-8")
