"""Text from files, made safe to print on a terminal.

Class names, notes and commands come from checkpoints anyone can write.
Printed as they are, ANSI/OSC escape sequences in them would reach the
user's terminal: recolour it, retitle the window, hide text, or on some
terminals write files.  So every character that is not printable is shown
as its escape (``\\x1b``), never sent.
"""

from __future__ import annotations


def printable(value: object) -> str:
    """``str(value)`` with every non-printable character escaped."""
    text = str(value)
    if text.isprintable():
        return text
    return ''.join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    if c == '\n':
        return '\\n'
    if c == '\t':
        return '\\t'
    if code <= 0xFF:
        return f'\\x{code:02x}'
    if code <= 0xFFFF:
        return f'\\u{code:04x}'
    return f'\\U{code:08x}'


def printable_lines(text: str) -> str:
    """:func:`printable` line by line, keeping the line breaks."""
    return '\n'.join(printable(line) for line in text.split('\n'))
