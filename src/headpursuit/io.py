"""Files: atomic writes, and artifacts with a kind, a schema version and one reader for all.

Every artifact the package writes (activations, rankings, explanations, steering runs,
experiment results) carries ``kind`` (e.g. ``"headpursuit.ranking"``) and
``schema_version``. JSON artifacts derive from :class:`JsonArtifact`, which gives them
``save`` / ``load`` / ``to_json`` / ``from_json``; their loaders read through
:class:`Fields`, which checks every key, type and range and refuses a damaged or foreign
file with one line. :func:`load_artifact` reads any artifact by its kind.

Notebook display: every registered artifact has ``_repr_html_``, which looks its kind up in
a renderer registry (:func:`register_html`). The registry is filled by
:mod:`headpursuit.report`, the last stage, which no artifact imports (data flows one way);
the first ``_repr_html_`` call imports it by name.

Writes are atomic: a temporary file (or staging directory) beside the target, then a
rename, so an error or an interrupt never leaves half a file under the target's name, and
Ctrl-C or SIGTERM removes the temporary file. A process killed outright (SIGKILL, power
cut) cannot clean up; its temporary file's name records the process that made it, so the
next write into that folder removes it once that process is provably gone
(:func:`remove_stale_temp`).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from ._version import __version__
from .errors import ArtifactError, InputError
from .heads import Head, parse_head

PathLike = str | os.PathLike[str]
T = TypeVar("T", bound="JsonArtifact")

#: Prefix of every temporary file and staging directory the package creates. The whole
#: name is ``.hp-tmp-<pid>-<machine>-<boot>-<random>.<target name>``: the creating
#: process, a hash of its host name and PID namespace, and a hash of the host's boot id.
TEMP_PREFIX = ".hp-tmp-"
_TEMP_NAME = re.compile(r"^\.hp-tmp-(\d+)-([0-9a-f]{8})-([0-9a-f]{8})-")
_TARGET_CHARS_IN_TEMP = 80  # keeps temporary names short enough for any valid target name

#: JSON artifacts larger than this are refused before they are parsed (the largest real
#: ones, rankings of models with thousands of heads and steering runs of thousands of
#: prompts, are a few MB).
MAX_JSON_BYTES = 256 * 2**20

# Errors of the file system that the user can fix (a read-only, full or wrong place).
_WRITE_ERRNOS = {
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "EFBIG",
        "ENAMETOOLONG",
        "ENOTDIR",
        "EISDIR",
        "EEXIST",
    )
    if hasattr(errno, name)
}


# --- temporary files and who made them --------------------------------------------------


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """This process's host name and PID namespace, hashed: where its PIDs mean something."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return _short_hash(f"{socket.gethostname()}|{namespace}")


@functools.lru_cache(maxsize=1)
def _boot() -> str:
    """The host's boot id, hashed (every process of an earlier boot is gone)."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    return _short_hash(boot_id)


def _temp_prefix() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{_machine()}-{_boot()}-"


def _temp_suffix(target: Path) -> str:
    return "." + target.name[:_TARGET_CHARS_IN_TEMP]


def _process_gone(pid: int) -> bool:
    """True only when no process ``pid`` runs any more on this machine (a zombie counts as gone)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists but belongs to another user, or we cannot tell
        return False
    try:  # an exited process that its parent has not reaped yet writes nothing more
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def is_stale_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file or staging directory of ours whose maker is gone.

    Provably gone: made on this machine (same host and PID namespace) during an earlier
    boot, or during this boot by a process that no longer runs. Anything else (another
    machine's, a live process's, a name of another form) is not stale.
    """
    match = _TEMP_NAME.match(name)
    if match is None or match.group(2) != _machine():
        return False
    return match.group(3) != _boot() or _process_gone(int(match.group(1)))


def remove_stale_temp(folder: PathLike) -> list[Path]:
    """Remove the stale temporary files and staging directories in ``folder`` (see
    :func:`is_stale_temp`), left by a process killed outright; return what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX) or not is_stale_temp(entry.name):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # another run removed it first
        except OSError:
            continue  # not ours to remove after all (permissions): leave it
        removed.append(path)
    return removed


def _raise_write_error(path: Path, error: OSError) -> NoReturn:
    """Raise a one-line :class:`InputError` for a file-system error the user can fix (no
    permission, no space, read-only, a file where a folder should be), else ``error`` itself."""
    if error.errno in _WRITE_ERRNOS:
        raise InputError(
            f"Cannot write {path}: {error.strerror or error}. Choose another path, or make "
            "room or permission there."
        ) from error
    raise error


# --- atomic files ---------------------------------------------------------------------


def check_writable(path: PathLike, *, what: str = "output") -> Path:
    """Fail now, with one line, if ``path`` cannot be written later (before any long work).

    The path must not be a directory or another non-regular file (a device, a pipe), its
    name must fit the file system, and its folder must exist (or be creatable) and be
    writable. Nothing is created.
    """
    path = Path(path)
    if len(os.fsencode(path.name)) > 255:
        raise InputError(f"The {what} file name {path.name[:40]}... is too long; shorten it.")
    try:
        if path.is_dir():
            raise InputError(f"The {what} path {path} is a directory; give a file name.")
        if path.exists() and not path.is_file():
            raise InputError(
                f"The {what} path {path} exists and is not a regular file; give a file name."
            )
        folder = path.parent
        while not folder.exists():
            if folder == folder.parent:
                break
            folder = folder.parent
    except OSError as error:  # e.g. a folder name too long for the file system
        raise InputError(f"Cannot write {what} {path}: {error.strerror or error}.") from error
    if not folder.is_dir():
        raise InputError(f"Cannot write {what} {path}: {folder} is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {what} {path}: no write permission in {folder}.")
    return path


def _prepare_folder(target: Path) -> None:
    """Create ``target``'s folder and clear stale temporary files of ours from it."""
    if target.exists() and not target.is_file() and not target.is_dir():
        raise InputError(f"{target} exists and is not a regular file; give another path.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _raise_write_error(target, error)
    remove_stale_temp(target.parent)


def atomic_write(
    path: PathLike, write: Callable[[str], Any], *, keep_existing: bool = False
) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` onto ``path``.

    The temporary file lies beside ``path``; on any error or interrupt it is removed, so
    ``path`` is either the old file, absent, or the whole new file. With
    ``keep_existing``, a file that appeared at ``path`` meanwhile (another process wrote
    the same thing) is kept and ours discarded. A file-system error the user can fix (no
    permission, no space, read-only) is one :class:`InputError`.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name.")
    _prepare_folder(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=_temp_prefix(), suffix=_temp_suffix(path), dir=path.parent
        )
    except OSError as error:
        _raise_write_error(path, error)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are ordinary files
        if keep_existing:
            _place_unless_present(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        _raise_write_error(path, error)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _place_unless_present(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (then discard ``tmp``)."""
    try:
        os.link(tmp, path)  # atomic, and fails if path exists
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not path.exists():
            os.replace(tmp, path)
    Path(tmp).unlink(missing_ok=True)


def atomic_directory(target: PathLike, fill: Callable[[Path], None]) -> Path:
    """Create directory ``target`` by filling a staging directory beside it, then renaming.

    If another process created ``target`` meanwhile, its copy is kept and ours discarded.
    An error or interrupt removes the staging directory: ``target`` is whole or absent.
    """
    target = Path(target)
    _prepare_folder(target)
    try:
        staging = Path(
            tempfile.mkdtemp(prefix=_temp_prefix(), suffix=_temp_suffix(target), dir=target.parent)
        )
    except OSError as error:
        _raise_write_error(target, error)
    try:
        fill(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # a concurrent run won the race
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        _raise_write_error(target, error)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def cache_dir() -> Path:
    """Where converted checkpoints live (``$HEADPURSUIT_CACHE`` or ``~/.cache/headpursuit``)."""
    return Path(os.environ.get("HEADPURSUIT_CACHE", Path.home() / ".cache" / "headpursuit"))


def save_pretrained_all(directory: Path, *savables: Any) -> None:
    """Call ``save_pretrained(directory)`` on each model, tokenizer or processor."""
    for savable in savables:
        savable.save_pretrained(directory)


def write_json(path: PathLike, data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically. Non-finite floats become ``null``."""
    text = json.dumps(_finite(data), indent=1, ensure_ascii=False, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _finite(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _finite(value.item())
    return value


# --- reading --------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which headpursuit never writes")


def read_json(path: PathLike, *, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing, unreadable, oversized or malformed file is one clear line.

    Refuses files over :data:`MAX_JSON_BYTES`, nesting too deep for the parser, integers
    too long to convert, and ``NaN`` / ``Infinity`` (never written by :func:`write_json`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No {what} at {path}.")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ArtifactError(
                f"{path} is {size / 2**20:.0f} MiB, more than any {what} "
                f"({MAX_JSON_BYTES // 2**20} MiB); it is not one."
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ArtifactError(f"{path} is not a {what}: {error}.") from error
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror or error}.") from error
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError as error:
        raise ArtifactError(f"{path} is not a {what}: it is nested too deeply.") from error
    except ValueError as error:  # JSONDecodeError, over-long integers, NaN/Infinity
        reason = " ".join(str(error).split())
        if "integer string conversion" in reason:
            reason = "it holds an integer thousands of digits long"
        raise ArtifactError(f"{path} is not a {what}: {reason}.") from error


_MISSING: Any = object()

#: The largest token id, layer, head or count an artifact may hold (a sanity bound that
#: keeps crafted numbers from reaching tensor code).
MAX_INDEX = 2**31 - 1


def _finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` if it is not a finite JSON number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def _show(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of a value for an error message."""
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Fields:
    """Checked access to one JSON object of an artifact; every failure is an ArtifactError.

    Example: ``Fields(data, "ranking.json").int("n_atoms", minimum=0)``.
    """

    def __init__(self, data: Any, source: str, remedy: str = ""):
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object, found {type(data).__name__}.")
        self.data = data
        self.source = source
        self.remedy = remedy

    def error(self, message: str) -> ArtifactError:
        tail = f" {self.remedy}" if self.remedy else ""
        return ArtifactError(f"{self.source}: {message}.{tail}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.error(f"missing field {key!r}")
            return default
        return self.data[key]

    def str(self, key: str, default: Any = _MISSING) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(f"field {key!r} must be text, found {_show(value)}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(f"field {key!r} must be true or false, found {_show(value)}")
        return value

    def int(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        value = self.raw(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"field {key!r} must be an integer, found {_show(value)}")
        return self._in_range(key, value, minimum, maximum)

    def float(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        allow_null: bool = False,
    ) -> float:
        value = self.raw(key, default)
        if value is None and allow_null:
            return math.nan
        number = _finite_number(value)
        if number is None:
            raise self.error(f"field {key!r} must be a finite number, found {_show(value)}")
        return float(self._in_range(key, number, minimum, maximum))

    def _in_range(self, key: str, value: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            raise self.error(f"field {key!r} must be at least {minimum}, found {_show(value)}")
        if maximum is not None and value > maximum:
            raise self.error(f"field {key!r} must be at most {maximum}, found {_show(value)}")
        return value

    def list(self, key: str, default: Any = _MISSING, *, max_length: int | None = None) -> list:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(f"field {key!r} must be a list, found {type(value).__name__}")
        if max_length is not None and len(value) > max_length:
            raise self.error(f"field {key!r} has {len(value)} entries, at most {max_length} fit")
        return value

    def strs(self, key: str, default: Any = _MISSING) -> list[str]:
        values = self.list(key, default)
        if not all(isinstance(v, str) for v in values):
            raise self.error(f"field {key!r} must be a list of texts")
        return values

    def ints(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> list[int]:
        values = self.list(key, default)
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.error(f"field {key!r} must be a list of integers, found {_show(value)}")
            self._in_range(key, value, minimum, maximum)
        return values

    def floats(self, key: str, default: Any = _MISSING, *, allow_null: bool = False) -> list[float]:
        """A list of finite numbers (``null`` -> NaN where ``allow_null``)."""
        values = self.list(key, default)
        out = []
        for value in values:
            number = _finite_number(value)
            if value is None and allow_null:
                out.append(math.nan)
            elif number is not None:
                out.append(number)
            else:
                raise self.error(
                    f"field {key!r} must be a list of finite numbers, found {_show(value)}"
                )
        return out

    def heads(self, key: str, default: Any = _MISSING) -> list[Head]:
        try:
            return [parse_head(text) for text in self.strs(key, default)]
        except InputError as error:
            raise self.error(f"field {key!r}: {error}") from error

    def head(self, key: str) -> Head:
        try:
            return parse_head(self.str(key))
        except InputError as error:
            raise self.error(f"field {key!r}: {error}") from error

    def nested(self, key: str) -> Fields:
        return Fields(self.raw(key), f"{self.source} [{key}]", self.remedy)

    def items(self, key: str) -> list[Fields]:
        return [
            Fields(item, f"{self.source} [{key}][{i}]", self.remedy)
            for i, item in enumerate(self.list(key))
        ]


# --- notebook display -----------------------------------------------------------------

#: A function turning one artifact into a self-contained HTML fragment (no script needed).
HtmlRenderer = Callable[[Any], str]
_HTML: dict[str, HtmlRenderer] = {}


def register_html(kind: str, render: HtmlRenderer) -> HtmlRenderer:
    """Show artifacts of ``kind`` (e.g. ``"headpursuit.ranking"``) in notebooks with ``render``.

    ``render(artifact)`` returns an HTML fragment: it is what the artifact's
    ``_repr_html_`` returns. A later registration for the same kind replaces the earlier.
    Returns ``render``, so this also works as ``register_html(kind, f)`` inside a decorator.
    """
    if not isinstance(kind, str) or not kind:
        raise InputError(
            f"An HTML renderer needs an artifact kind such as 'headpursuit.ranking', got {kind!r}."
        )
    if not callable(render):
        raise InputError(f"The HTML renderer for {kind!r} must be a function, got {render!r}.")
    _HTML[kind] = render
    return render


def html_renderers() -> dict[str, HtmlRenderer]:
    """``kind -> renderer`` of every registered HTML renderer."""
    return dict(_HTML)


def _repr_html_(artifact: Any) -> str | None:
    """The artifact as HTML via its kind's renderer; ``None`` (plain repr) when none is registered."""
    kind = getattr(artifact, "kind", "")
    if kind not in _HTML:
        importlib.import_module("headpursuit.report")  # fills the registry
    render = _HTML.get(kind)
    return None if render is None else render(artifact)


# --- artifacts ------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}

#: The modules that define the package's artifacts; imported by :func:`artifact_kinds`
#: so that reading an artifact by kind never depends on what was imported before.
_ARTIFACT_MODULES = (
    "headpursuit.activations.store",
    "headpursuit.ranking.head_ranking",
    "headpursuit.ranking.explain",
    "headpursuit.steering.comparison",
    "headpursuit.evaluation.experiment",
)


def register_artifact(cls: type) -> type:
    """Class decorator: make ``cls`` (which has ``kind`` and ``load``) known to :func:`load_artifact`.

    A class without its own ``_repr_html_`` gets the registry lookup (see :func:`register_html`).
    """
    _REGISTRY[cls.kind] = cls  # type: ignore[attr-defined]
    if not hasattr(cls, "_repr_html_"):
        cls._repr_html_ = _repr_html_  # type: ignore[attr-defined]
    return cls


def artifact_kinds() -> dict[str, type]:
    """``kind -> class`` of every registered artifact."""
    import importlib

    for module in _ARTIFACT_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


class JsonArtifact:
    """Base of the JSON artifacts: a header (kind, schema version, library version) + a body.

    Subclasses set ``kind``, ``made_by`` (the command that makes one, for error messages)
    and implement ``body()`` and ``from_body(fields)``. ``schema_version`` is raised when
    the body's layout changes; files of a newer schema are refused.
    """

    kind: ClassVar[str]
    made_by: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def body(self) -> dict:
        raise NotImplementedError

    def _repr_html_(self) -> str | None:
        """HTML for notebooks: the renderer registered for ``kind`` (see :func:`register_html`)."""
        return _repr_html_(self)

    @classmethod
    def from_body(cls: type[T], fields: Fields) -> T:
        raise NotImplementedError

    def to_json(self) -> dict:
        """The artifact as a JSON-ready dict (header + body)."""
        return {
            "kind": self.kind,
            "schema_version": self.schema_version,
            "library_version": __version__,
            **self.body(),
        }

    @classmethod
    def from_json(cls: type[T], data: Any, source: str = "<data>") -> T:
        """Rebuild from :meth:`to_json` output; refuses another kind or a newer schema."""
        fields = Fields(data, source, f"Make it again with `{cls.made_by}`.")
        kind = data.get("kind")
        if kind != cls.kind:
            raise ArtifactError(
                f"{source} is not a {cls.kind} artifact (kind={_show(kind)}); "
                f"make one with `{cls.made_by}`."
            )
        version = fields.int("schema_version", 1, minimum=1)
        if version > cls.schema_version:
            raise ArtifactError(
                f"{source} has schema version {version}; this headpursuit ({__version__}) reads "
                f"up to {cls.schema_version}. Upgrade headpursuit."
            )
        return cls.from_body(fields)

    def save(self, path: PathLike) -> Path:
        """Write the artifact as JSON, atomically."""
        if Path(path).suffix.lower() == ".csv":
            raise InputError(
                f"{path}: artifacts are saved as JSON; for a table use "
                "`.to_frame().to_csv(path)` (CSV is an export, not an artifact)."
            )
        return write_json(path, self.to_json())

    @classmethod
    def load(cls: type[T], path: PathLike) -> T:
        """Read a file written by :meth:`save`; one-line :class:`ArtifactError` on anything else."""
        data = read_json(path, what=f"{cls.kind} file")
        return cls.from_json(data, str(path))


def load_artifact(path: PathLike) -> Any:
    """Read any artifact the package writes, by its ``kind``."""
    path = Path(path)
    kinds = artifact_kinds()
    for cls in kinds.values():
        sniff = getattr(cls, "sniff", None)
        if sniff is not None and sniff(path):
            return cls.load(path)
    data = read_json(path, what="headpursuit artifact")
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in kinds:
        known = ", ".join(sorted(kinds))
        raise ArtifactError(
            f"{path} has kind={_show(kind)}, not one of the known artifacts ({known})."
        )
    return kinds[kind].from_json(data, str(path))
