"""The one error policy of every command: what a user must fix is one line and exit 2, a run that stopped is
one line and exit 1, Ctrl-C is exit 130, anything else is a bug and keeps its traceback.

Errors other libraries raise are attributed by where they arose, never by their wording: each configured
piece is built (or run) inside `attributed(field)`, which turns what it raises into a `ConfigError` naming
that field and keeping the library's own first line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
DEBUG = "VAE_LIGHTNING_DEBUG"  # set to 1: every error keeps its traceback


class ConfigError(ValueError):
    """Bad input, with a message that names the field or file and the fix (printed as one line, exit 2)."""


class RunStopped(RuntimeError):
    """A run that stopped for a reason the user can act on: a non-finite loss, a checkpoint that could not be
    written (printed as one line, exit 1)."""


def own_error(err: BaseException) -> ConfigError | None:
    """The first ConfigError among `err` and the exceptions it was raised from or during (another library may
    wrap ours, as jsonargparse does when a class it builds refuses its arguments)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        if isinstance(err, ConfigError):
            return err
        seen.append(err)
        err = err.__cause__ or err.__context__
    return None


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0].rstrip(".") if lines else type(err).__name__


@contextmanager
def attributed(field: str, fix: str = "") -> Iterator[None]:
    """Within the block, an exception other than our own becomes a ConfigError that names `field` (the
    piece being built or run) and `fix`, with the raising library's first line."""
    try:
        yield
    except (ConfigError, RunStopped):
        raise
    except Exception as err:
        raise ConfigError(f"{field}: {first_line(err)}{f'. Fix: {fix}' if fix else ''}.") from err


def run_command(prog: str, command: Callable[[], T], interrupted: Callable[[], str] | None = None) -> T:
    """Run `command` under the error policy, with `prog` starting each line.

    Args:
        prog: the command's name, e.g. `vae-lightning`.
        command: what to run.
        interrupted: says what was saved when Ctrl-C stopped the command.
    """
    try:
        return command()
    except (ConfigError, RunStopped) as err:
        if os.environ.get(DEBUG):
            raise
        status, kind = (2, "error") if isinstance(err, ConfigError) else (1, "stopped")
        message = str(err)
        if err.__cause__ is not None and not isinstance(err.__cause__, (ConfigError, RunStopped)):
            message += f" ({DEBUG}=1 shows the traceback)"
        print(f"{prog}: {kind}: {message}", file=sys.stderr)
        raise SystemExit(status) from err
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not isinstance(err.__context__, KeyboardInterrupt):
            raise  # Lightning exits 1 after its clean-up of a Ctrl-C; any other exit passes through
        saved = interrupted() if interrupted else ""
        print(f"{prog}: interrupted (Ctrl-C); {saved or 'nothing was saved'}.", file=sys.stderr)
        raise SystemExit(130) from err
