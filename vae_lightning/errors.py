"""The one exception type for input a user has to fix, the checks every settings class uses to raise it, and
the explanation of errors other libraries raise for a user's input."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from lightning.fabric.utilities.exceptions import MisconfigurationException

T = TypeVar("T")


class ConfigError(ValueError):
    """Bad input, with a message that names the field or file and the fix.

    The CLI prints it as a one-line error and exits with status 2 instead of a traceback.
    """


def _fix(fix: str) -> str:
    return f": {fix}." if fix else "."


def check_int(field: str, value: object, minimum: int = 1, fix: str = "") -> int:
    """`value` if it is an integer (not a bool) >= `minimum`; else a ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{field} must be {wanted}, got {value!r}{_fix(fix)}")
    return value


def check_number(field: str, value: object, minimum: float = 0.0, what: str = "a finite number") -> float:
    """`value` as a float if it is a finite real number (not a bool) >= `minimum`; else a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{field} must be {what} >= {minimum:g}, got {value!r}.")
    return float(value)


def check_choice(field: str, value: T, choices: Sequence[T]) -> T:
    """`value` if it is one of `choices`; else a ConfigError listing them (None shown as null)."""
    if value not in choices:
        names = ["null" if c is None else repr(c) for c in choices]
        listed = " or ".join(names) if len(names) == 2 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise ConfigError(f"{field} must be {listed}, got {value!r}.")
    return value


# ------------------------------------------------------------------------------ errors raised elsewhere
@dataclass(frozen=True)
class KnownError:
    """An error that Lightning, torch, jsonargparse or the OS raises for a user's setting or path: its
    type and a pattern of its message, the field it is about and how to fix it."""

    kinds: tuple[type[BaseException], ...]
    pattern: str
    field: str
    fix: str


# One line per case: the first entry that matches an exception of the chain explains it.
KNOWN_ERRORS = (
    KnownError(
        (Exception,),
        r"No supported gpu backend|accelerator is not available|no CUDA GPUs|CUDA is not available",
        "trainer.accelerator",
        "this machine has no usable GPU: use --trainer.accelerator cpu (or auto)",
    ),
    KnownError((Exception,), r"`max_epochs` must be", "trainer.max_epochs", "give epochs >= 0, or -1 for no limit"),
    KnownError((Exception,), r"`max_steps` must be", "trainer.max_steps", "give steps >= 0, or -1 for no limit"),
    KnownError((ValueError,), r"Invalid learning rate", "model.optimizer.init_args.lr", "give a rate > 0, e.g. 0.001"),
    KnownError(
        (ValueError,),
        r"Invalid (epsilon|beta|weight_decay|momentum)",
        "model.optimizer.init_args",
        "keep to the optimizer's ranges (eps > 0, 0 <= betas < 1, weight_decay >= 0)",
    ),
    KnownError(
        (Exception,),
        r"ReduceLROnPlateau conditioned on metric",
        "model.lr_scheduler_interval",
        "ReduceLROnPlateau watches val/nelbo, which is measured once an epoch: use lr_scheduler_interval: epoch",
    ),
    KnownError(
        (RuntimeError, MemoryError),
        r"can't allocate memory|out of memory|Cannot allocate memory",
        "model.latent_dim, the networks' sizes or data.batch_size",
        "the model or a batch does not fit in memory: use fewer latents, narrower layers or a smaller batch",
    ),
    KnownError(
        (ValueError,),
        r"`val_check_interval` \(",
        "trainer.val_check_interval",
        "give at most the number of training batches of an epoch, or a fraction of an epoch (e.g. 0.5)",
    ),
    KnownError(
        (ValueError,), r"is not in bounds, numpy accepts", "seed_everything", "give a seed from 0 to 4294967295"
    ),
    KnownError(
        (OSError,),
        r"File name too long",
        "a path",
        "shorten it (logger name, save_dir, dirpath or data_dir): each part of a path holds at most 255 bytes",
    ),
)


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


# Where the settings Lightning's messages name (as `Class(argument=...)`) live in a config.
SETTING_FIELDS = {"Trainer": "trainer.{}", "ModelCheckpoint": "checkpoint.{}", "Timer": "trainer.max_time"}


def _lightning_setting(message: str) -> str:
    """The config field a Lightning message names: as `Class(argument=...)`, or a Trainer argument named in
    words ("... for limit_train_batches"); else a pointer to the trainer's settings."""
    found = re.search(r"`?(\w+)\((\w+)=", message)
    if found and found.group(1) in SETTING_FIELDS:
        return SETTING_FIELDS[found.group(1)].format(found.group(2))
    if found:
        return f"{found.group(1)}.{found.group(2)} (under trainer.callbacks)"
    import inspect

    from lightning.pytorch import Trainer

    arguments = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    named = [word for word in re.findall(r"\w+", message) if word in arguments]
    return f"trainer.{named[0]}" if named else "a trainer setting"


def _is_lightning_setting_error(err: BaseException) -> bool:
    """Lightning's MisconfigurationException (a setting it cannot use), or a ValueError about `Trainer(...)`."""
    return isinstance(err, MisconfigurationException) or (
        isinstance(err, ValueError) and str(err).startswith("`Trainer(")
    )


def explain(err: BaseException) -> str | None:
    """A one-line message for an error a user's input caused, or None for anything else (a bug to see whole).

    A ConfigError anywhere in the chain (ours, also when jsonargparse wraps it) is its own message;
    otherwise the first `KNOWN_ERRORS` entry that matches names the field and the fix; otherwise
    Lightning's MisconfigurationException (always a setting Lightning cannot use) names its setting.
    """
    chain = _chain(err)
    for link in chain:
        if isinstance(link, ConfigError):
            return str(link)
    for link in chain:
        first_line = (str(link).strip().splitlines() or [type(link).__name__])[0].rstrip(".!")
        for known in KNOWN_ERRORS:
            if isinstance(link, known.kinds) and re.search(known.pattern, str(link)):
                return f"{known.field}: {first_line}. Fix: {known.fix}."
    for link in chain:
        if _is_lightning_setting_error(link):
            first_line = (str(link).strip().splitlines() or [""])[0].rstrip(".!")
            return f"{_lightning_setting(first_line)}: {first_line}. Fix: change that setting (see --help)."
    return None
