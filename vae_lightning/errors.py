"""One error policy: user errors are one line (exit 2), stopped runs one line (exit 1), Ctrl-C 130, SIGTERM 143 (128 +
15, what schedulers expect of a terminated job), bugs a traceback."""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from lightning.pytorch.utilities.exceptions import SIGTERMException

T = TypeVar("T")
DEBUG = "VAE_LIGHTNING_DEBUG"  # set to 1: every error keeps its traceback


class ConfigError(ValueError):
    """Bad input, with a message that names the field or file and the fix (printed as one line, exit 2)."""


class RunStopped(RuntimeError):
    """A run stopped for a reason the user can act on, e.g. a non-finite loss or a full disk (one line, exit 1)."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type's name."""
    return next((line.strip().rstrip(".") for line in str(err).splitlines() if line.strip()), type(err).__name__)


@contextmanager
def attributed(field: str, fix: str = "") -> Iterator[None]:
    """Another library's exception in the block becomes a ConfigError naming `field`, its first line and `fix`."""
    try:
        yield
    except (ConfigError, RunStopped):
        raise
    except Exception as err:
        raise ConfigError(f"{field}: {first_line(err)}{f'. Fix: {fix}' if fix else ''}.") from err


def run_command(prog: str, command: Callable[[], T], interrupted: Callable[[], str] = lambda: "") -> T:
    """Run `command` under the error policy, each line starting with `prog`; `interrupted` says what Ctrl-C saved."""
    try:
        return command()
    except (ConfigError, RunStopped) as err:
        if os.environ.get(DEBUG):
            raise
        status, kind = (2, "error") if isinstance(err, ConfigError) else (1, "stopped")
        explained = err.__cause__ is None or isinstance(err.__cause__, (ConfigError, RunStopped))
        print(f"{prog}: {kind}: {err}{'' if explained else f' ({DEBUG}=1 shows the traceback)'}", file=sys.stderr)
        raise SystemExit(status) from err
    except (KeyboardInterrupt, SystemExit) as err:
        terminated = isinstance(err, SIGTERMException)  # Lightning's stop after a SIGTERM (schedulers, Slurm)
        if isinstance(err, SystemExit) and not terminated and not isinstance(err.__context__, KeyboardInterrupt):
            raise  # Lightning exits 1 after its clean-up of a Ctrl-C; any other exit passes through
        what, status = ("terminated (SIGTERM)", 143) if terminated else ("interrupted (Ctrl-C)", 130)
        print(f"{prog}: {what}; {interrupted() or 'nothing was saved'}.", file=sys.stderr)
        raise SystemExit(status) from err
