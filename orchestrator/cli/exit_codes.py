"""The exit codes of every command (DESIGN.md): one definition for the whole CLI."""

OK = 0  # success
FAILED = 1  # the thing failed: a job failed, unhealthy, not found, Redis unreachable
USAGE = 2  # usage or validation error: nothing was changed
