"""Text that is safe to put on a terminal: the one escaping rule lxss uses.

Names, paths, config values and warnings that reach the user may come from a
distribution or an archive, which are untrusted: an escape sequence in them must not
drive the host's terminal, nor a newline split lxss's one-line messages. Imports
nothing, so the `lxss` client pays nothing for it.
"""


def one_line(text: str) -> str:
    """*text* with every unprintable character (controls, line breaks, stray surrogates, ...)
    spelled as Python would escape it: ``\\n``, ``\\x1b``, ``\\u202e``, ``\\udc80``.

    Printable text, non-ASCII letters included, is returned unchanged.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
