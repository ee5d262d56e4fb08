"""One exception type for bad input, so stages can print one line and exit non-zero."""

import signal


class ResoMapError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""

    exit_code = 2


class Interrupted(ResoMapError):
    """Stopped by a signal: the exit code is the shell's, 128 + the signal's number (130 for Ctrl-C)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.exit_code = 128 + signum
