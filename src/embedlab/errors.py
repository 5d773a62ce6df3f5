"""The project's own error classes: what the command line reports as one line (exit status 2).

Every problem a user can fix (a bad flag, a missing or damaged file, a setting that cannot work) is a
``UserError``; the CLI catches these and nothing else, so a real bug still shows its traceback.
Each class also derives from the built-in it refines (ValueError, FileNotFoundError, ...), so code and
tests that catch the built-in keep working. Torch-free: the ground floor imports it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message says what was wrong and how to fix it."""


class InputError(UserError, ValueError):
    """A flag, setting or file content that cannot be used as given."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class DiskFullError(UserError, OSError):
    """A file could not be written because its file system is full (nothing partial is left under its name)."""


def failure_text(exc: BaseException) -> str:
    """One line that says what stopped a run: the exception's first line, or its kind when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: How an interrupted command's message ends when the run folder is not known (the command fills it in when it is).
GO_ON = "continue with --resume RUN"
