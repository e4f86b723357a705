"""Files: atomic writes, and artifacts with a kind, a schema version and one reader for all.

Every artifact the package writes (activations, rankings, explanations, steering runs,
experiment results) carries ``kind`` (e.g. ``"headpursuit.ranking"``) and
``schema_version``. JSON artifacts derive from :class:`JsonArtifact`, which gives them
``save`` / ``load`` / ``to_json`` / ``from_json``; their loaders read through
:class:`Fields`, which checks every key, type and range and refuses a damaged or foreign
file with one line. :func:`load_artifact` reads any artifact by its kind.

Notebook display: every registered artifact has ``_repr_html_``, which looks its kind up in
a renderer registry (:func:`register_html`). The registry is filled by
:mod:`headpursuit.report`, the last stage, so that no artifact imports the report (data
flows one way); importing ``headpursuit`` imports the report and fills it.

Writes are atomic: a temporary file beside the target, then a rename, so an error or an
interrupt never leaves half a file under the target's name.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ._version import __version__
from .errors import ArtifactError, InputError
from .heads import Head, parse_head

PathLike = str | os.PathLike[str]
T = TypeVar("T", bound="JsonArtifact")

#: Prefix of every temporary file and staging directory the package creates.
TEMP_PREFIX = ".hp-tmp-"


# --- atomic files ---------------------------------------------------------------------


def check_writable(path: PathLike, *, what: str = "output") -> Path:
    """Fail now, with one line, if ``path`` cannot be written later (before any long work).

    The path must not be a directory, and its folder must exist (or be creatable) and be
    writable. Nothing is created.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"The {what} path {path} is a directory; give a file name.")
    folder = path.parent
    while not folder.exists():
        if folder == folder.parent:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"Cannot write {what} {path}: {folder} is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write {what} {path}: no write permission in {folder}.")
    return path


def atomic_write(path: PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` onto ``path``.

    The temporary file lies beside ``path``; on any error or interrupt it is removed, so
    ``path`` is either the old file, absent, or the whole new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_directory(target: PathLike, fill: Callable[[Path], None]) -> Path:
    """Create directory ``target`` by filling a staging directory beside it, then renaming.

    If another process created ``target`` meanwhile, its copy is kept and ours discarded.
    An error or interrupt removes the staging directory: ``target`` is whole or absent.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        fill(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # a concurrent run won the race
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


def read_json(path: PathLike, *, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or unreadable file is one clear :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No {what} at {path}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArtifactError(f"{path} is not a {what}: {error}.") from error
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror or error}.") from error


_MISSING: Any = object()


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
            raise self.error(f"field {key!r} must be text, found {value!r}")
        return value

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(f"field {key!r} must be true or false, found {value!r}")
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
            raise self.error(f"field {key!r} must be an integer, found {value!r}")
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
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.error(f"field {key!r} must be a number, found {value!r}")
        if not math.isfinite(value):
            raise self.error(f"field {key!r} must be finite, found {value!r}")
        return float(self._in_range(key, value, minimum, maximum))

    def _in_range(self, key: str, value: Any, minimum: Any, maximum: Any) -> Any:
        if minimum is not None and value < minimum:
            raise self.error(f"field {key!r} must be at least {minimum}, found {value}")
        if maximum is not None and value > maximum:
            raise self.error(f"field {key!r} must be at most {maximum}, found {value}")
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

    def ints(self, key: str, default: Any = _MISSING, *, minimum: int | None = None) -> list[int]:
        values = self.list(key, default)
        for value in values:
            if not isinstance(value, int) or isinstance(value, bool):
                raise self.error(f"field {key!r} must be a list of integers, found {value!r}")
            self._in_range(key, value, minimum, None)
        return values

    def floats(self, key: str, default: Any = _MISSING, *, allow_null: bool = False) -> list[float]:
        values = self.list(key, default)
        out = []
        for value in values:
            if value is None and allow_null:
                out.append(math.nan)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(float(value))
            else:
                raise self.error(f"field {key!r} must be a list of numbers, found {value!r}")
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
    render = _HTML.get(getattr(artifact, "kind", ""))
    return None if render is None else render(artifact)


# --- artifacts ------------------------------------------------------------------------

_REGISTRY: dict[str, type] = {}


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
                f"{source} is not a {cls.kind} artifact (kind={kind!r}); "
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
    for cls in _REGISTRY.values():
        sniff = getattr(cls, "sniff", None)
        if sniff is not None and sniff(path):
            return cls.load(path)
    data = read_json(path, what="headpursuit artifact")
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ArtifactError(f"{path} has kind={kind!r}, not one of the known artifacts ({known}).")
    return _REGISTRY[kind].from_json(data, str(path))
