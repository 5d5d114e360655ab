class EdgekdError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


class GateFailed(EdgekdError):
    """A quality gate was missed; results were still written. The CLI exits with code 3."""


class CorruptFile(EdgekdError, ValueError):
    """A bookkeeping file in the run directory (JSON, YAML) cannot be read. Also a ValueError, so code that
    treats an unreadable cache file as "recompute" keeps doing so."""


class RunDirBusy(EdgekdError):
    """Another edgekd process holds the run directory's lock."""
