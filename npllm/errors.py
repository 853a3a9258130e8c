"""The errors a user can cause, as opposed to bugs.

Every problem that a person can fix (a missing file, a corrupt checkpoint, a
setting out of range, an empty corpus) is raised as an ``NpllmError``: its
message is one line that names what is wrong.  The command line prints such
errors as that line, with exit status 2; any other exception is a bug in
npllm and keeps its traceback, so it can be reported and fixed.

A message names a setting in backquotes, as the Python API calls it
(`` `lr` ``, `` `batch_size` ``); the command line shows each as its flag
(``--lr``, ``--batch-size``).  So the library knows nothing of flags, and
the same error reads right in both.
"""


class NpllmError(Exception):
    """A problem the user can fix; the message is one line."""


class SettingError(NpllmError, ValueError):
    """A setting (a config field, an argument) out of its range or contradicting another."""
