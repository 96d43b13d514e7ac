"""Errors a person can act on. Every one carries a message that says what is
wrong and what to do; the CLI prints it without a traceback."""


class TLabError(Exception):
    """Base class: the message is meant for the user."""


class ConfigError(TLabError):
    """A setting is out of range or unknown."""


class FolderNotAllowed(ConfigError):
    """A folder outside the allowed ones; `command` allows it (`python -m core allow ...`)."""

    def __init__(self, message: str, command: str):
        super().__init__(message)
        self.command = command


class WeightsUnavailable(TLabError):
    """Pretrained weights can't be had (offline and not cached, bad file...)."""


class DataError(TLabError):
    """A dataset can't be loaded or is unusable as given."""
