"""Hostile input against the activations artifact, through its public API only.

Written against ``Activations(...)``, ``.save(path)`` and ``Activations.load(path)`` and
nothing of the on-disk layout, so that any storage format (one file, or a directory of
shards) must pass it: whatever is saved loads back equal; whatever damage is done to the
files under the saved path, a load returns valid activations or refuses with one line;
bad contents are refused at save or at load, never handed back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headpursuit import Activations, UserError

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def activations(draw) -> Activations:
    n, layers, heads, dim = (
        draw(st.integers(lo, hi)) for lo, hi in ((1, 5), (1, 3), (1, 3), (1, 4))
    )
    values = draw(
        st.lists(
            st.floats(-1e4, 1e4, allow_nan=False, width=32),
            min_size=n * layers * heads * dim,
            max_size=n * layers * heads * dim,
        )
    )
    pooled = torch.tensor(values, dtype=torch.float32).reshape(n, layers, heads, dim)
    prompts = draw(st.lists(st.text(max_size=20), min_size=n, max_size=n) | st.just([]))
    return Activations(
        pooled=pooled,
        model_id=draw(st.text(min_size=1, max_size=10)),
        fingerprint=draw(st.text(alphabet="0123456789abcdef", min_size=16, max_size=16)),
        pooling=draw(st.sampled_from(["mean", "all", "last", "image", "text", "mask"])),
        d_model=draw(st.integers(1, 4096)),
        prompts=prompts,
    )


def check_valid(acts: Activations) -> None:
    """What any Activations.load result must satisfy."""
    assert acts.pooled.dtype == torch.float32 and acts.pooled.dim() == 4
    assert min(acts.pooled.shape) >= 1
    assert torch.isfinite(acts.pooled).all()
    assert acts.prompts == [] or len(acts.prompts) == acts.n_samples
    assert all(isinstance(p, str) for p in acts.prompts)
    assert acts.d_model >= 1 and isinstance(acts.model_id, str)


def load_or_refuse(path: Path) -> Activations | None:
    try:
        acts = Activations.load(path)
    except UserError as error:  # ArtifactError for damage; InputError if nothing is there
        assert len(str(error).splitlines()) == 1, str(error)
        return None
    check_valid(acts)
    return acts


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


@SETTINGS
@given(acts=activations())
def test_saved_activations_load_back_equal(tmp_path_factory, acts):
    path = acts.save(tmp_path_factory.mktemp("acts") / "acts.safetensors")
    loaded = Activations.load(path)
    check_valid(loaded)
    assert torch.equal(loaded.pooled, acts.pooled)
    assert loaded.prompts == acts.prompts
    assert (loaded.model_id, loaded.fingerprint, loaded.pooling, loaded.d_model) == (
        acts.model_id,
        acts.fingerprint,
        acts.pooling,
        acts.d_model,
    )


@SETTINGS
@given(acts=activations(), data=st.data())
def test_damaged_files_load_valid_or_are_refused_in_one_line(tmp_path_factory, acts, data):
    path = acts.save(tmp_path_factory.mktemp("acts") / "acts.safetensors")
    victim = data.draw(st.sampled_from(files_under(path)))
    raw = victim.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "overwrite", "append", "delete", "empty"]))
    if how == "truncate":
        victim.write_bytes(raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))])
    elif how == "overwrite":
        start = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        junk = data.draw(st.binary(min_size=1, max_size=64))
        victim.write_bytes(raw[:start] + junk + raw[start + len(junk) :])
    elif how == "append":
        victim.write_bytes(raw + data.draw(st.binary(min_size=1, max_size=64)))
    elif how == "delete":
        victim.unlink()
    else:
        victim.write_bytes(b"")
    load_or_refuse(path)


def bad(acts: Activations, **changes) -> Activations:
    fields = {
        "pooled": acts.pooled,
        "model_id": acts.model_id,
        "fingerprint": acts.fingerprint,
        "pooling": acts.pooling,
        "d_model": acts.d_model,
        "prompts": acts.prompts,
    }
    return Activations(**{**fields, **changes})


GOOD = Activations(
    pooled=torch.randn(4, 2, 3, 5, generator=torch.Generator().manual_seed(0)),
    model_id="tiny",
    fingerprint="0123456789abcdef",
    pooling="mean",
    d_model=8,
    prompts=["a", "b", "c", "d"],
)

BAD_CONTENTS = {
    "NaN values": lambda: bad(
        GOOD, pooled=GOOD.pooled.clone().index_fill_(0, torch.tensor([1]), float("nan"))
    ),
    "infinite values": lambda: bad(
        GOOD, pooled=GOOD.pooled.clone().index_fill_(0, torch.tensor([0]), float("inf"))
    ),
    "three dimensions": lambda: bad(GOOD, pooled=GOOD.pooled[:, 0]),
    "five dimensions": lambda: bad(GOOD, pooled=GOOD.pooled[..., None]),
    "no samples": lambda: bad(GOOD, pooled=GOOD.pooled[:0], prompts=[]),
    "no heads": lambda: bad(GOOD, pooled=GOOD.pooled[:, :, :0]),
    "more prompts than samples": lambda: bad(GOOD, prompts=[*GOOD.prompts, "e"]),
    "fewer prompts than samples": lambda: bad(GOOD, prompts=GOOD.prompts[:2]),
    "d_model 0": lambda: bad(GOOD, d_model=0),
    "negative d_model": lambda: bad(GOOD, d_model=-3),
}


@pytest.mark.parametrize("case", list(BAD_CONTENTS))
def test_bad_contents_are_refused_at_save_or_at_load(tmp_path, case):
    path = tmp_path / "acts.safetensors"
    try:
        BAD_CONTENTS[case]().save(path)
    except UserError as error:
        assert len(str(error).splitlines()) == 1
        return
    with pytest.raises(UserError) as refused:
        Activations.load(path)
    assert len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool]
)
def test_other_dtypes_come_back_as_float32_or_are_refused(tmp_path, dtype):
    acts = bad(GOOD, pooled=(GOOD.pooled * 10).to(dtype))
    try:
        path = acts.save(tmp_path / "acts.safetensors")
    except UserError:
        return
    loaded = load_or_refuse(path)
    if loaded is not None:
        assert torch.equal(loaded.pooled, (GOOD.pooled * 10).to(dtype).float())


def test_prompts_of_any_size_and_text_round_trip(tmp_path):
    """Prompts far beyond any header limit, and every kind of character, come back intact."""
    prompts = ["x" * 200_000, "é\u2028\n\t\x00🙂", '{"kind": "injected"}', "a" * 50_000]
    acts = bad(GOOD, prompts=prompts)
    loaded = Activations.load(acts.save(tmp_path / "acts.safetensors"))
    assert loaded.prompts == prompts


def test_paths_that_hold_no_activations_are_refused(tmp_path):
    cases = {
        "missing": tmp_path / "missing.safetensors",
        "empty folder": tmp_path / "folder",
        "random bytes": tmp_path / "noise.safetensors",
        "a JSON artifact": tmp_path / "ranking.json",
        "an empty file": tmp_path / "empty.safetensors",
    }
    cases["empty folder"].mkdir()
    cases["random bytes"].write_bytes(os.urandom(4096))
    cases["a JSON artifact"].write_text(json.dumps({"kind": "headpursuit.ranking"}))
    cases["an empty file"].write_bytes(b"")
    for name, path in cases.items():
        with pytest.raises(UserError) as refused:
            Activations.load(path)
        assert len(str(refused.value).splitlines()) == 1, name


def test_a_header_claiming_a_huge_tensor_is_refused(tmp_path):
    """A file whose header claims 1e6^4 float32 values (4 exabytes) but holds 16 bytes."""
    header = json.dumps(
        {
            "__metadata__": {"kind": "headpursuit.activations", "schema_version": "2"},
            "pooled": {"dtype": "F32", "shape": [10**6] * 4, "data_offsets": [0, 16]},
        }
    ).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    with pytest.raises(UserError):
        Activations.load(path)
