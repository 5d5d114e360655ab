class EdgekdError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class GateFailed(EdgekdError):
    """A quality gate was missed; results were still written. The CLI exits with code 3."""
