"""What every command shares: the app, the options, model loading, and the error contract.

The error contract, as the tests check it:

* a user error (:class:`~headpursuit.errors.UserError`, or a bad option value) prints one
  line, ``Error: ...``, on stderr and exits with status 2, before any long work;
* Ctrl-C (SIGINT) or SIGTERM prints one line and exits with status 130 or 143, at any
  moment from start-up on; files are written atomically, so no partial file or temporary
  file of ours is left (after SIGKILL, the next write into that folder removes it);
* anything else is a bug: the traceback is printed with a request to report it, and
  the exit status is 1.
"""

from __future__ import annotations

import functools
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from ..errors import Terminated, UserError, raise_terminated

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def warn(message: str) -> None:
    """A warning: the result is valid but weaker than it looks (one line on stderr)."""
    typer.echo(f"Warning: {' '.join(str(message).split())}", err=True)


def _one_line_warning(message: Warning | str, category: type, *args: Any, **kwargs: Any) -> None:
    """``warnings.showwarning`` for the CLI: a library warning as one :func:`warn` line."""
    warn(str(message))


def one_line(error: BaseException) -> str:
    """An error's message folded onto one line."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


class OneLineErrorsGroup(TyperGroup):
    """A command group whose usage errors (bad option values, unknown options) are one line."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
        try:
            with warnings.catch_warnings():
                # Library warnings (no chat template, weak data...) as one "Warning:" line.
                warnings.simplefilter("default")
                warnings.showwarning = _one_line_warning
                result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Exit as exit_:
            result = exit_.exit_code
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("Interrupted.", err=True)
            result = EXIT_INTERRUPTED
        except Terminated:
            typer.echo("Terminated.", err=True)
            result = EXIT_TERMINATED
        except typer.TyperException as error:  # usage errors: bad or unknown options
            if type(error).__name__ == "NoArgsIsHelpError":  # bare `headpursuit`: the help
                typer.echo(error.format_message())
                result = 0
            else:
                ctx = getattr(error, "ctx", None)
                command = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
                usage = error.exit_code == EXIT_USER_ERROR
                hint = f" (see `headpursuit{command} --help`)" if usage else ""
                typer.echo(f"Error: {one_line(error.format_message())}{hint}", err=True)
                result = error.exit_code
        finally:
            signal.signal(signal.SIGTERM, previous)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


def handle_errors(function: F) -> F:
    """Turn user errors into one line and status 2, interrupts into 130/143, bugs into 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("Interrupted; no partial file was left.", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            typer.echo("Terminated; no partial file was left.", err=True)
            raise typer.Exit(EXIT_TERMINATED) from None
        except UserError as error:
            typer.echo(f"Error: {one_line(error)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except (typer.Exit, typer.TyperException):
            raise
        except Exception:
            traceback.print_exc()
            typer.echo(
                "This is a bug in headpursuit, not a mistake of yours. Please report it with "
                "the command you ran and the traceback above.",
                err=True,
            )
            raise typer.Exit(EXIT_BUG) from None

    return wrapper  # type: ignore[return-value]


app = typer.Typer(
    cls=OneLineErrorsGroup,
    help=(
        "Find the attention heads that specialise in a concept (SOMP over the unembedding), "
        "explain them in tokens, and steer the model through them.\n\n"
        "Pipeline: capture -> rank -> explain -> steer -> report. Each stage reads and writes "
        "a file, so any stage can be re-run alone. Try `headpursuit demo` first."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Dtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Short name (smollm2-135m, qwen2.5-0.5b, gemma-3-270m, tiny-vlm), Hugging Face "
        "hub id, local checkpoint directory or .gguf file. Omitted: the embedded SmolLM2.",
    ),
]
DtypeOption = Annotated[Dtype, typer.Option("--dtype", help="Weights dtype.")]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="Put the model on this device: cpu, cuda, cuda:1.")
]
DeviceMapOption = Annotated[
    str | None,
    typer.Option("--device-map", help="Passed to from_pretrained instead of --device, e.g. auto."),
]
SeedOption = Annotated[int, typer.Option("--seed", min=0, help="Seed of every random draw.")]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars.")
]


def out_option(help_text: str) -> Any:
    """The ``--out`` / ``-o`` option of a command that writes a file."""
    return typer.Option("--out", "-o", help=help_text)


def load(
    model: str | None,
    dtype: Dtype = Dtype.float32,
    device: str | None = None,
    device_map: str | None = None,
):
    """Load a model from the shared model options (see :func:`headpursuit.load_model`)."""
    from ..models.loading import load_model

    return load_model(model, dtype=dtype.value, device=device, device_map=device_map)


def check_model_options(device: str | None, device_map: str | None) -> None:
    """Refuse impossible device options before any file is read or model loaded."""
    from ..errors import InputError
    from ..models.loading import check_device, check_device_map

    if device is not None and device_map is not None:
        raise InputError("Give --device or --device-map, not both.")
    check_device(device)
    check_device_map(device_map)


def parse_window(text: str | None) -> tuple[int, int] | None:
    """``"3:20"`` -> ``(3, 20)`` (an inclusive layer window); ``None`` stays ``None``."""
    from ..errors import InputError

    if not text:
        return None
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError as error:
        raise InputError(
            f"Write the layer window as FIRST:LAST (e.g. 1:29), got {text!r}."
        ) from error
    return first, last


def parse_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_numbers(
    text: str,
    option: str,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> list[Any]:
    """``"1, 2.5"`` -> ``[1.0, 2.5]`` (``integer``: ints), each finite and in range.

    Raises :class:`~headpursuit.errors.InputError` naming ``option`` for an empty list, a
    part that is not a number, or one out of range.
    """
    import math

    from ..errors import InputError

    kind = "whole number" if integer else "number"
    values: list[Any] = []
    for part in parse_list(text):
        try:
            value = int(part) if integer else float(part)
        except ValueError:
            raise InputError(
                f"{option} takes comma-separated {kind}s, got {part!r} in {text!r}."
            ) from None
        if not math.isfinite(value):
            raise InputError(f"{option} values must be finite, got {part!r}.")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            low = "" if minimum is None else f" at least {minimum:g}"
            high = "" if maximum is None else f" at most {maximum:g}"
            both = " and" if low and high else ""
            raise InputError(f"{option} values must be{low}{both}{high}, got {part!r}.")
        values.append(value)
    if not values:
        raise InputError(f"{option} is empty; give comma-separated {kind}s.")
    return values


def existing_file(path: Path, what: str) -> Path:
    """Refuse a path that is not a readable file, naming ``what`` it should be."""
    from ..errors import InputError

    if not path.is_file():
        raise InputError(f"No {what} at {path}.")
    return path


def existing_path(path: Path, what: str) -> Path:
    """Refuse a path that is neither a file nor a directory (an artifact directory or an
    earlier single file), naming ``what`` it should be."""
    from ..errors import InputError

    if not (path.is_file() or path.is_dir()):
        raise InputError(f"No {what} at {path}.")
    return path
