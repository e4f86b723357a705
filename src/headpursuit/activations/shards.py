"""The activations artifact on disk: one directory, one or many shards, one format.

Layout of an artifact ``acts/`` (what ``headpursuit capture --out acts`` and
:meth:`~headpursuit.Activations.save` write)::

    acts/
      meta.json                 what the shards hold, how they were made, and whether all is there
      prompts.jsonl             the prompts, one JSON string per line, in sample order
      shard-00000.safetensors   tensor "pooled" [rows, n_layers, n_heads, head_dim] float32
      shard-00001.safetensors   the next rows, ...

``meta.json`` holds ``kind`` (``"headpursuit.activations"``), ``schema_version`` (3),
``library_version``, ``complete``, ``model_id``, ``fingerprint`` (of the weights),
``pooling``, ``d_model``, ``shape`` ``[n, n_layers, n_heads, head_dim]``, ``dtype``,
``shard_size`` (rows per shard, the last may hold fewer), ``settings`` (``max_length``,
``chat``, ``batch_size``, ``model_dtype`` of the capture), ``prompts`` (file, count,
SHA-256) and ``shards``: one entry per shard with its file, its rows ``[start, stop)`` and
its SHA-256. Shard ``i`` always holds rows ``[i·shard_size, (i+1)·shard_size)``, whichever
process computed it. Each shard file's safetensors header also names its rows and the
capture's *plan* (a hash of everything that must agree for a resume: weights
fingerprint, shape, pooling, settings except the batch size, shard size, prompts).

Writes: every file is written to a temporary name in the directory and renamed, so a
shard is whole or absent. ``meta.json`` is written first with ``"complete": false`` and
the planned shards, and rewritten with ``"complete": true`` and every shard's checksum
only when all shards are there; readers refuse an incomplete artifact.

Reads (what is in memory when):

* :meth:`Activations.load <headpursuit.Activations.load>`: everything,
  ``[n, n_layers, n_heads, head_dim]`` float32, allocated only after every shard's header
  agreed with ``meta.json``; shards are read, checksummed and checked for NaN/inf one at
  a time.
* :class:`ShardedActivations` (``Activations.open``): ``meta.json`` only. Opening reads
  every shard once to verify its checksum and values (one shard in memory at a time);
  :meth:`~ShardedActivations.head_codes` then gathers the ``[n, head_dim]`` columns of a
  few heads shard by shard, so SOMP over a million prompts holds a chunk of heads, never
  the whole artifact. The prompts are read when first asked for.

Earlier single-file activations (a ``.safetensors`` file of schema 1 or 2) are still read
by :mod:`headpursuit.activations.store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._version import __version__
from ..errors import ArtifactError, DegenerateDataError, InputError
from ..heads import Head
from ..io import TEMP_PREFIX, Fields, atomic_write, write_json

if TYPE_CHECKING:
    from ..models.architectures import AttentionSites

KIND = "headpursuit.activations"
SHARD_KIND = "headpursuit.activations.shard"
SCHEMA_VERSION = 3
META = "meta.json"
PROMPTS = "prompts.jsonl"
MADE_BY = "headpursuit capture"
#: Default shard size in bytes: rows per shard = this // bytes per row (at least 1).
DEFAULT_SHARD_BYTES = 128 * 2**20
#: Settings that may differ between the runs of one resumed capture.
RESUMABLE_SETTINGS = ("batch_size",)

_SHARD_NAME = re.compile(r"shard-(\d{5,})\.safetensors")
_FLOAT_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
}
_HASH_BLOCK = 2**20


def shard_name(index: int) -> str:
    """File name of shard ``index``."""
    return f"shard-{index:05d}.safetensors"


def default_shard_size(n_layers: int, n_heads: int, head_dim: int) -> int:
    """Rows per shard so that a shard holds about :data:`DEFAULT_SHARD_BYTES` of float32."""
    return max(1, DEFAULT_SHARD_BYTES // (4 * n_layers * n_heads * head_dim))


# --- prompts ------------------------------------------------------------------------------


def _prompt_lines(prompts: Sequence[str]) -> Iterator[bytes]:
    for index, prompt in enumerate(prompts):
        try:
            yield (json.dumps(prompt, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError as error:
            raise InputError(
                f"Prompt {index} is not valid Unicode text ({error.reason}); fix it."
            ) from error


def prompts_digest(prompts: Sequence[str]) -> str:
    """SHA-256 of ``prompts.jsonl`` as :func:`write_prompts` writes it."""
    digest = hashlib.sha256()
    for line in _prompt_lines(prompts):
        digest.update(line)
    return digest.hexdigest()


def write_prompts(path: Path, prompts: Sequence[str]) -> None:
    """Write ``prompts.jsonl`` atomically (one JSON string per line), streaming."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            for line in _prompt_lines(prompts):
                handle.write(line)

    atomic_write(path, write)


def read_prompts_file(path: Path, count: int, sha256: str | None) -> list[str]:
    """Read and check ``prompts.jsonl``: ``count`` JSON strings, with the given checksum."""
    if not path.is_file():
        raise ArtifactError(f"{path} is missing; capture the activations again.")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactError(
            f"{path} does not match its checksum in {META} (damaged or edited); capture again."
        )
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != count:
        raise ArtifactError(
            f"{path} holds {len(lines)} prompts for {count} samples; capture the activations again."
        )
    prompts = []
    for number, line in enumerate(lines, start=1):
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ArtifactError(f"{path}:{number} is not a JSON string; capture again.") from error
        if not isinstance(value, str):
            raise ArtifactError(f"{path}:{number} is not a JSON string; capture again.")
        prompts.append(value)
    return prompts


# --- shard files --------------------------------------------------------------------------


def write_shard(path: Path, pooled: torch.Tensor, metadata: dict[str, str]) -> str:
    """Write one safetensors file with tensor ``pooled`` atomically; return its SHA-256.

    The file is written by hand (8-byte header length, JSON header, raw float32 bytes) so
    that the bytes are hashed as they are written and the tensor is never copied.
    """
    pooled = pooled.detach().to("cpu", torch.float32).contiguous()
    nbytes = pooled.numel() * 4
    header = {
        "pooled": {"dtype": "F32", "shape": list(pooled.shape), "data_offsets": [0, nbytes]},
        "__metadata__": metadata,
    }
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            for part in (struct.pack("<Q", len(text)), text, pooled.numpy().data.cast("B")):
                handle.write(part)
                digest.update(part)

    try:
        atomic_write(path, write)
    except OSError as error:  # e.g. a full disk: the finished shards are kept
        raise InputError(
            f"Cannot write {path}: {error.strerror or error}; make room or choose another "
            "--out, then run the same command again to continue."
        ) from error
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardHeader:
    """What a shard file's safetensors header says: tensor names, dtype, shape, metadata."""

    keys: frozenset[str]
    dtype: str
    shape: tuple[int, ...]
    metadata: dict[str, str]


def read_shard_header(path: Path) -> ShardHeader:
    """Read a shard's header only (no tensor data); :class:`ArtifactError` if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = frozenset(handle.keys())
            if "pooled" not in keys:
                return ShardHeader(keys, "", (), handle.metadata() or {})
            piece = handle.get_slice("pooled")
            return ShardHeader(
                keys, piece.get_dtype(), tuple(piece.get_shape()), handle.metadata() or {}
            )
    except Exception as error:  # safetensors raises its own error types on bad files
        raise ArtifactError(
            f"{path} is not a readable shard ({' '.join(str(error).split())}); capture again."
        ) from error


# --- the plan: what must agree for a resume ------------------------------------------------


@dataclass(frozen=True)
class ShardEntry:
    """One shard of an artifact: its file, rows ``[start, stop)`` and checksum (when known)."""

    file: str
    start: int
    stop: int
    sha256: str | None = None


@dataclass
class Plan:
    """Everything that fixes a capture's result and its shards.

    Attributes:
        shape: ``(n, n_layers, n_heads, head_dim)``.
        settings: the capture's settings (``max_length``, ``chat``, ``batch_size``,
            ``model_dtype``); all but :data:`RESUMABLE_SETTINGS` must agree to resume.
        prompts_sha256: :func:`prompts_digest` of the prompts.
        prompts_count: how many prompts are stored: n, or 0 when they are unknown.
    """

    model_id: str
    fingerprint: str
    pooling: str
    d_model: int
    shape: tuple[int, int, int, int]
    shard_size: int
    prompts_sha256: str
    prompts_count: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.prompts_count is None:
            self.prompts_count = self.shape[0]

    @property
    def n_samples(self) -> int:
        return self.shape[0]

    def entries(self) -> list[ShardEntry]:
        """The planned shards, rows ``[i·shard_size, (i+1)·shard_size)`` clipped to n."""
        n, size = self.shape[0], self.shard_size
        return [
            ShardEntry(shard_name(i), start, min(start + size, n))
            for i, start in enumerate(range(0, n, size))
        ]

    def key(self) -> dict[str, Any]:
        """The fields that must agree between the runs of one resumed capture."""
        settings = {k: v for k, v in self.settings.items() if k not in RESUMABLE_SETTINGS}
        return {
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "d_model": self.d_model,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "shard_size": self.shard_size,
            "prompts_sha256": self.prompts_sha256,
            "prompts_count": self.prompts_count,
            "settings": settings,
        }

    def digest(self) -> str:
        """A short hash of :meth:`key`, written into every shard's header."""
        text = json.dumps(self.key(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def shard_metadata(self, entry: ShardEntry) -> dict[str, str]:
        return {
            "kind": SHARD_KIND,
            "plan": self.digest(),
            "start": str(entry.start),
            "stop": str(entry.stop),
        }

    def meta(self, complete: bool, entries: Sequence[ShardEntry]) -> dict[str, Any]:
        """The ``meta.json`` content."""
        return {
            "kind": KIND,
            "schema_version": SCHEMA_VERSION,
            "library_version": __version__,
            "complete": complete,
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "d_model": self.d_model,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "shard_size": self.shard_size,
            "settings": self.settings,
            "prompts": {
                "file": PROMPTS,
                "count": self.prompts_count,
                "sha256": self.prompts_sha256,
            },
            "shards": [
                {"file": e.file, "start": e.start, "stop": e.stop, "sha256": e.sha256}
                for e in entries
            ],
        }


# --- reading meta.json --------------------------------------------------------------------


@dataclass
class Meta:
    """A validated ``meta.json``."""

    plan: Plan
    complete: bool
    shards: list[ShardEntry]
    library_version: str


def _positive(fields: Fields, key: str) -> int:
    return fields.int(key, minimum=1, maximum=2**40)


def read_meta(directory: Path) -> Meta:
    """Read and validate ``directory/meta.json`` (not the shards); one-line errors.

    Checks the kind, the schema version, every field's type, the shape, and that the
    shard list covers rows ``[0, n)`` in order with plain shard file names.
    """
    from ..io import read_json

    path = directory / META
    if not path.is_file():
        raise ArtifactError(
            f"{directory} has no {META}, so it is not a headpursuit activations directory; "
            f"make one with `{MADE_BY}`."
        )
    data = read_json(path, what="activations meta.json")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise ArtifactError(
            f"{path} is not a headpursuit activations file (kind={kind!r}); "
            f"make one with `{MADE_BY}`."
        )
    fields = Fields(data, str(path), "Capture the activations again.")
    version = fields.int("schema_version", minimum=1)
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema version {version}; this headpursuit ({__version__}) reads up "
            f"to {SCHEMA_VERSION}. Upgrade headpursuit."
        )
    if version < SCHEMA_VERSION:
        raise fields.error(f"schema version {version} is not a directory layout")
    shape = fields.ints("shape", minimum=1)
    if len(shape) != 4 or any(s > 2**40 for s in shape):
        raise fields.error(f"field 'shape' must be [n, layers, heads, head_dim], found {shape}")
    dtype = fields.str("dtype")
    if dtype != "float32":
        raise fields.error(f"field 'dtype' is {dtype!r}, expected 'float32'")
    settings = fields.raw("settings", {})
    if not isinstance(settings, dict):
        raise fields.error("field 'settings' must be an object")
    prompts = fields.nested("prompts")
    count = prompts.int("count", minimum=0)
    if prompts.str("file") != PROMPTS or count not in (0, shape[0]):
        raise fields.error(f"field 'prompts' must name {PROMPTS} with one prompt per sample")
    plan = Plan(
        model_id=fields.str("model_id"),
        fingerprint=fields.str("fingerprint"),
        pooling=fields.str("pooling"),
        d_model=_positive(fields, "d_model"),
        shape=(shape[0], shape[1], shape[2], shape[3]),
        shard_size=_positive(fields, "shard_size"),
        prompts_sha256=prompts.str("sha256"),
        prompts_count=count,
        settings=settings,
        dtype=dtype,
    )
    shards = []
    for item in fields.items("shards"):
        entry = ShardEntry(
            item.str("file"),
            item.int("start", minimum=0),
            item.int("stop", minimum=1),
            item.raw("sha256", None),
        )
        if entry.sha256 is not None and not isinstance(entry.sha256, str):
            raise item.error("field 'sha256' must be text or null")
        shards.append(entry)
    expected = -(-shape[0] // plan.shard_size)  # checked before listing the planned shards
    planned = plan.entries() if len(shards) == expected else []
    if [(e.file, e.start, e.stop) for e in shards] != [(e.file, e.start, e.stop) for e in planned]:
        raise fields.error(
            f"the shard list does not cover rows 0..{shape[0]} in blocks of {plan.shard_size}"
        )
    complete = fields.bool("complete")
    if complete and any(e.sha256 is None for e in shards):
        raise fields.error("a complete artifact must list every shard's sha256")
    return Meta(plan, complete, shards, fields.str("library_version", "unknown"))


def _check_header(directory: Path, plan: Plan, entry: ShardEntry, header: ShardHeader) -> None:
    """Refuse a shard whose header disagrees with ``meta.json`` (before any data is read)."""
    path = directory / entry.file

    def fail(message: str) -> ArtifactError:
        return ArtifactError(f"{path}: {message}; capture the activations again.")

    if "pooled" not in header.keys:
        raise fail("no 'pooled' tensor")
    if header.dtype not in _FLOAT_DTYPES:
        raise fail(f"'pooled' has dtype {header.dtype}, expected floating point")
    if len(header.shape) != 4:
        raise fail(
            f"'pooled' has {len(header.shape)} dims, expected 4 [rows, layers, heads, head_dim]"
        )
    expected = (entry.stop - entry.start, *plan.shape[1:])
    if header.shape != expected:
        raise fail(f"'pooled' has shape {list(header.shape)}, expected {list(expected)}")


def _shard_is_done(directory: Path, plan: Plan, entry: ShardEntry) -> bool:
    """Whether the shard file exists and belongs to this plan (header only)."""
    path = directory / entry.file
    if not path.is_file():
        return False
    try:
        header = read_shard_header(path)
        _check_header(directory, plan, entry, header)
    except ArtifactError:
        return False
    meta = header.metadata
    return (
        meta.get("plan") == plan.digest()
        and meta.get("start") == str(entry.start)
        and meta.get("stop") == str(entry.stop)
    )


def _read_shard(path: Path, entry: ShardEntry) -> torch.Tensor:
    """One shard's ``pooled`` as float32, after its checksum and values are checked."""
    from safetensors import safe_open

    if entry.sha256 is not None and file_digest(path) != entry.sha256:
        raise ArtifactError(
            f"{path} does not match its checksum in {META} (damaged or replaced); capture again."
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            pooled = handle.get_tensor("pooled")
    except Exception as error:
        raise ArtifactError(
            f"{path} is not a readable shard ({' '.join(str(error).split())}); capture again."
        ) from error
    pooled = pooled.float()
    if not torch.isfinite(pooled).all():
        raise ArtifactError(f"{path}: 'pooled' holds NaN or infinite values; capture again.")
    return pooled


# --- the lazy reader ----------------------------------------------------------------------


def check_fits(
    what: str,
    model_id: str,
    fingerprint: str,
    dims: tuple[int, int, int],
    d_model: int,
    sites: AttentionSites,
    expected_fingerprint: str | None,
) -> None:
    """Raise :class:`ArtifactError` if activations of ``dims`` / ``fingerprint`` do not fit the model."""
    shape = (sites.n_layers, sites.n_heads, sites.head_dim)
    if dims != shape or d_model != sites.d_model:
        raise ArtifactError(
            f"{what} ({dims[0]} layers x {dims[1]} heads x {dims[2]}, from {model_id!r}) do not "
            f"fit this model ({shape[0]} x {shape[1]} x {shape[2]}). Capture them again with "
            "this model."
        )
    if expected_fingerprint is not None and expected_fingerprint != fingerprint:
        raise ArtifactError(
            f"{what} come from {model_id!r} (weights {fingerprint}), not from this model "
            f"(weights {expected_fingerprint}). Capture them again with it."
        )


def degenerate(n_samples: int) -> DegenerateDataError:
    """The error for activations with fewer than two distinct samples."""
    return DegenerateDataError(
        f"These activations hold {n_samples} sample(s) with identical head outputs (one "
        "prompt, or duplicates), so every head's centred output is zero and no head can be "
        "ranked or explained. Capture at least two distinct prompts."
    )


class ShardedActivations:
    """Activations read from disk a shard at a time (see the module doc for what is in RAM).

    Has the read-only interface of :class:`~headpursuit.Activations` that ranking and
    SOMP need: the sizes, ``model_id``, ``fingerprint``, ``pooling``, ``d_model``,
    ``prompts``, :meth:`check_model`, :meth:`check_distinct`, :meth:`head_codes`,
    :meth:`layer_codes` and :meth:`iter_shards`. Use ``Activations.open(path)``.
    """

    def __init__(self, directory: str | os.PathLike[str], *, verify: bool = True):
        self.path = Path(directory)
        meta = read_meta(self.path)
        if not meta.complete:
            raise unfinished(self.path, meta, self._count_done(meta))
        for entry in meta.shards:
            path = self.path / entry.file
            if not path.is_file():
                raise ArtifactError(f"{path} is missing; capture the activations again.")
            _check_header(self.path, meta.plan, entry, read_shard_header(path))
        self.meta = meta
        self._prompts: list[str] | None = None
        if verify:
            for _ in self.iter_shards():
                pass

    def _count_done(self, meta: Meta) -> int:
        return sum(_shard_is_done(self.path, meta.plan, e) for e in meta.shards)

    # -- the Activations interface ---------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.meta.plan.model_id

    @property
    def fingerprint(self) -> str:
        return self.meta.plan.fingerprint

    @property
    def pooling(self) -> str:
        return self.meta.plan.pooling

    @property
    def d_model(self) -> int:
        return self.meta.plan.d_model

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.meta.plan.settings)

    @property
    def library_version(self) -> str:
        return self.meta.library_version

    @property
    def n_samples(self) -> int:
        return self.meta.plan.shape[0]

    @property
    def n_layers(self) -> int:
        return self.meta.plan.shape[1]

    @property
    def n_heads(self) -> int:
        return self.meta.plan.shape[2]

    @property
    def head_dim(self) -> int:
        return self.meta.plan.shape[3]

    @property
    def prompts(self) -> list[str]:
        """The prompts (read from ``prompts.jsonl`` and checked on first access)."""
        if self._prompts is None:
            plan = self.meta.plan
            self._prompts = read_prompts_file(
                self.path / PROMPTS, plan.prompts_count or 0, plan.prompts_sha256
            )
        return self._prompts

    def __repr__(self) -> str:
        return (
            f"ShardedActivations({self.n_samples} samples x {self.n_layers} layers x "
            f"{self.n_heads} heads x head_dim {self.head_dim} in {len(self.meta.shards)} "
            f"shards, pooling={self.pooling!r}, model={self.model_id!r})"
        )

    def check_model(self, sites: AttentionSites, fingerprint: str | None = None) -> None:
        """Raise :class:`ArtifactError` if these activations do not come from this model."""
        dims = (self.n_layers, self.n_heads, self.head_dim)
        check_fits(
            "These activations", self.model_id, self.fingerprint, dims, self.d_model, sites,
            fingerprint,
        )  # fmt: skip

    def check_distinct(self) -> None:
        """Refuse fewer than two distinct samples, reading shards until two rows differ."""
        first: torch.Tensor | None = None
        for _, _, pooled in self.iter_shards(verify=False):
            flat = pooled.reshape(pooled.shape[0], -1)
            first = flat[0] if first is None else first
            if bool((flat != first).any()):
                return
        raise degenerate(self.n_samples)

    def iter_shards(self, verify: bool = True) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, pooled [stop - start, L, H, head_dim] float32)`` per shard, in order.

        One shard is in memory at a time. With ``verify`` each shard's checksum is checked
        first; its values are always checked for NaN/inf.
        """
        for entry in self.meta.shards:
            digest = entry if verify else ShardEntry(entry.file, entry.start, entry.stop)
            yield entry.start, entry.stop, _read_shard(self.path / entry.file, digest)

    def read_all(self) -> torch.Tensor:
        """Every row, ``[n, L, H, head_dim]`` float32 (allocated once, filled shard by shard)."""
        out = torch.empty(self.meta.plan.shape, dtype=torch.float32)
        for start, stop, pooled in self.iter_shards():
            out[start:stop] = pooled
        return out

    def head_codes(self, heads: Sequence[Head]) -> torch.Tensor:
        """The pooled outputs of ``heads``, ``[len(heads), n, head_dim]`` float32, read per shard."""
        from safetensors import safe_open

        out = torch.empty(len(heads), self.n_samples, self.head_dim, dtype=torch.float32)
        for entry in self.meta.shards:
            with safe_open(str(self.path / entry.file), framework="pt") as handle:
                piece = handle.get_slice("pooled")
                for b, head in enumerate(heads):
                    out[b, entry.start : entry.stop] = piece[:, head.layer, head.head].float()
        return out

    def layer_codes(self, layer: int) -> torch.Tensor:
        """One layer's pooled outputs, ``[n, n_heads, head_dim]`` float32, read per shard."""
        from safetensors import safe_open

        out = torch.empty(self.n_samples, self.n_heads, self.head_dim, dtype=torch.float32)
        for entry in self.meta.shards:
            with safe_open(str(self.path / entry.file), framework="pt") as handle:
                out[entry.start : entry.stop] = handle.get_slice("pooled")[:, layer].float()
        return out


def unfinished(directory: Path, meta: Meta, done: int) -> ArtifactError:
    """The error for an artifact whose ``meta.json`` says it is not complete."""
    return ArtifactError(
        f"{directory} is an unfinished capture ({done} of {len(meta.shards)} shards written); "
        "run the same `headpursuit capture` command again to finish it."
    )


# --- writing ------------------------------------------------------------------------------


def is_artifact_directory(path: Path) -> bool:
    """Whether ``path`` is a directory with a ``meta.json`` of this kind (cheap sniff)."""
    meta = path / META
    try:
        return path.is_dir() and meta.is_file() and f'"{KIND}"' in meta.read_text("utf-8")[:4096]
    except (OSError, UnicodeDecodeError):
        return False


def _ours(name: str) -> bool:
    return (
        name in (META, PROMPTS) or name.startswith(TEMP_PREFIX) or bool(_SHARD_NAME.fullmatch(name))
    )


def check_output(path: str | os.PathLike[str]) -> Path:
    """Fail now, with one line, if ``path`` cannot become an activations directory.

    ``path`` may be new, an empty directory, or an activations directory (to resume or
    to replace); a file or a directory holding other files is refused. Nothing is created.
    """
    path = Path(path)
    if len(os.fsencode(path.name)) > 255:
        raise InputError(
            f"The activations output name {path.name[:40]}... is too long; shorten it."
        )
    try:
        if path.exists() and not path.is_dir():
            if path.is_file():
                raise InputError(
                    f"The activations output {path} is a file; activations are a directory "
                    "now (meta.json + shards). Choose another --out, or remove the file."
                )
            raise InputError(
                f"The activations output {path} exists and is not a regular file or a "
                "directory; choose another --out."
            )
        if path.is_dir():
            foreign = sorted(p.name for p in path.iterdir() if not _ours(p.name))
            if foreign:
                raise InputError(
                    f"The activations output {path} is a directory holding other files "
                    f"({', '.join(foreign[:3])}); choose a new or empty directory for --out."
                )
            folder = path
        else:
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
    except OSError as error:  # e.g. a folder name too long, or a folder we may not list
        raise InputError(f"Cannot write activations {path}: {error.strerror or error}.") from error
    if not folder.is_dir():
        raise InputError(f"Cannot write activations {path}: {folder} is not a folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write activations {path}: no write permission in {folder}.")
    return path


def _clear(directory: Path) -> None:
    """Remove this package's files from ``directory`` (``meta.json`` first)."""
    (directory / META).unlink(missing_ok=True)
    for entry in directory.iterdir():
        if _ours(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in new:
        if key == "settings":
            for name in sorted(set(old.get(key, {})) | set(new[key])):
                a, b = old.get(key, {}).get(name), new[key].get(name)
                if a != b:
                    out.append(f"{name} {a!r} there, {b!r} here")
        elif old.get(key) != new[key]:
            label = {"prompts_sha256": "prompts", "fingerprint": "model weights"}.get(key, key)
            if label in ("prompts", "model weights"):
                out.append(f"other {label}")
            else:
                out.append(f"{label} {old.get(key)!r} there, {new[key]!r} here")
    return out


def prepare(directory: Path, plan: Plan, prompts: Sequence[str]) -> list[int]:
    """Make ``directory`` ready for ``plan`` and return the indices of the shards still to write.

    A new or empty directory gets ``meta.json`` (incomplete) and ``prompts.jsonl``. An
    artifact with the same plan is resumed: its finished shards are kept. A complete
    artifact with another plan is replaced; an unfinished one with another plan is
    refused (its shards may be hours of work), naming what differs.
    """
    check_output(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(f"{TEMP_PREFIX}*"):  # left by a killed run
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    entries = plan.entries()
    old: Meta | None = None
    if (directory / META).is_file():
        try:
            old = read_meta(directory)
        except ArtifactError:
            old = None  # unreadable: only our files are here (check_output), start afresh
    if old is not None and old.plan.key() != plan.key():
        if not old.complete:
            differences = "; ".join(_differences(old.plan.key(), plan.key()))
            raise InputError(
                f"{directory} holds an unfinished capture with other settings ({differences}); "
                "run the command that started it to finish it, or remove the directory or "
                "choose another --out."
            )
        old = None
    if old is None:
        _clear(directory)
        write_json(directory / META, plan.meta(False, entries))
        write_prompts(directory / PROMPTS, prompts)
        return list(range(len(entries)))
    prompts_file = directory / PROMPTS
    if not prompts_file.is_file() or file_digest(prompts_file) != plan.prompts_sha256:
        write_prompts(prompts_file, prompts)
    missing = [i for i, e in enumerate(entries) if not _shard_is_done(directory, plan, e)]
    if old.complete and not missing:
        return []
    write_json(directory / META, plan.meta(False, entries))  # also records this run's batch size
    return missing


def finalize(directory: Path, plan: Plan, digests: dict[int, str]) -> None:
    """Check every shard is there, checksum those not in ``digests``, mark the artifact complete.

    Args:
        digests: ``shard index -> SHA-256`` of the shards written by this run (hashed as
            they were written); the others are read once to hash them.
    """
    entries = plan.entries()
    missing = [e.file for e in entries if not _shard_is_done(directory, plan, e)]
    if missing:
        raise ArtifactError(
            f"{directory} lacks {len(missing)} of {len(entries)} shards ({missing[0]}, ...); "
            "run the same `headpursuit capture` command again to write them."
        )
    done = [
        ShardEntry(e.file, e.start, e.stop, digests.get(i) or file_digest(directory / e.file))
        for i, e in enumerate(entries)
    ]
    write_json(directory / META, plan.meta(True, done))


def save_directory(target: Path, plan: Plan, pooled: torch.Tensor, prompts: Sequence[str]) -> Path:
    """Write an in-memory capture as an artifact directory, replacing one that is there.

    The directory is filled under a temporary name beside ``target`` and renamed, so an
    error or interrupt leaves ``target`` as it was.
    """
    import tempfile

    check_output(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    try:
        entries = plan.entries()
        write_prompts(staging / PROMPTS, prompts)
        done = []
        for entry in entries:
            digest = write_shard(
                staging / entry.file, pooled[entry.start : entry.stop], plan.shard_metadata(entry)
            )
            done.append(ShardEntry(entry.file, entry.start, entry.stop, digest))
        write_json(staging / META, plan.meta(True, done))
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; artifacts are ordinary directories
        if target.exists():
            old = target.parent / f"{TEMP_PREFIX}{target.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
