"""The one exception type for input a user has to fix (config values, files, checkpoints)."""


class ConfigError(ValueError):
    """Bad input, with a message that names the field or file and the fix.

    The CLI prints it as a one-line error and exits with status 2 instead of a traceback.
    """
