"""One exception type for bad input, so stages can print one line and exit non-zero."""


class ResoMapError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
