"""User-facing errors. The CLI prints these as one line and exits non-zero, no traceback."""


class TunesmithError(Exception):
    """Bad input or a refused action: the message names the file/row/column and what to do."""

    exit_code = 2
