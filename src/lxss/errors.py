"""The root of lxss's own exceptions (STYLE §15).

Imports nothing, on purpose: the `lxss` client derives its errors from this class on
its start-up path, where lxss.api.errors (the Varlink error catalogue) would cost more
than it is worth. lxss.api.errors re-exports it, so both spellings name one class.
"""


class LxssError(Exception):
    """Root of lxss's own errors: catch this to catch any failure lxss itself reports."""
