"""One error hierarchy for the whole library.

Every expected failure is a `CosmosError` with a stable `code` (for `--json` and scripts), a
one-line `message` saying what is wrong, and an optional `hint` saying what to do. The CLI turns
it into `error: …` / `hint: …` and the exit code below; library code never prints or exits.
"""

from __future__ import annotations


class CosmosError(Exception):
    """Base class: one line of message, an optional hint, a stable code and an exit code."""

    code = "error"
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class ConfigError(CosmosError):
    code = "config"
    exit_code = 2


class SpecError(CosmosError):
    code = "spec"
    exit_code = 2


class MediaError(CosmosError):
    code = "media"
    exit_code = 3


class ToolMissingError(MediaError):
    """ffmpeg / ffprobe (or another executable) is not installed."""

    code = "tool_missing"


class TokenBudgetError(CosmosError):
    code = "token_budget"
    exit_code = 1


class SSHError(CosmosError):
    code = "ssh"
    exit_code = 4


class HostKeyError(SSHError):
    code = "host_key"


class TransferError(SSHError):
    code = "transfer"


class RemoteCommandError(CosmosError):
    """A command on the host exited non-zero; carries the `CommandResult` record."""

    code = "remote_command"
    exit_code = 5

    def __init__(self, message: str, hint: str | None = None, *, result=None, code=None):
        super().__init__(message, hint, code=code)
        self.result = result


class WorkerError(CosmosError):
    code = "worker"
    exit_code = 5


class HistoryError(CosmosError):
    """The run history (an SQLite file in the user data folder) cannot be read or written."""

    code = "history"
    exit_code = 2


class ServerError(CosmosError):
    """The warm server (`cosmos serve`): not running, not ready, failed to start, unreachable."""

    code = "server"
    exit_code = 5
