"""The one error every ``kit`` command raises for bad input."""


class UsageError(Exception):
    """Bad input (a flag, a setting, a file): the message is one line that says what to change.

    ``kit`` prints it and exits with status 2; any other failure is a finding (exit 1).
    """
