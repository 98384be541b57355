"""The one exception type users see: the CLI prints it as one line and exits 2."""


class TunelabError(Exception):
    """A user-facing problem (bad config key, missing file, unreachable hub) with a one-line message."""
