"""fprune.tensorfile: the safetensors format with torch alone, checked against the safetensors package."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, seeds

from fprune.errors import CheckpointError, InvalidArgumentError
from fprune.tensorfile import DTYPES, load_tensors, memory_of, read_header, save_tensors

_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int8,
           torch.uint8, torch.bool]


@st.composite
def tensor_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    out = {}
    for i in range(draw(st.integers(0, 4))):
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        dtype = draw(st.sampled_from(_DTYPES))
        g = torch.Generator().manual_seed(draw(seeds()))
        t = (torch.randn(shape, generator=g, dtype=torch.float64) * 50)
        t = t > 0 if dtype == torch.bool else t.to(dtype)
        if draw(st.booleans()) and t.dim() >= 2:
            t = t.transpose(0, 1)  # a non-contiguous view is written as its values
        out[f"t{i}.{draw(st.sampled_from(['weight', 'bias']))}"] = t
    return out


@settings(max_examples=examples(25))
@given(tensors=tensor_dicts())
def test_round_trip_and_interop_with_safetensors(tensors: dict[str, torch.Tensor]) -> None:
    """Written here, read here and by safetensors; written by safetensors (where installed), read here."""
    try:
        import safetensors.torch as safetensors_torch
    except ImportError:  # the core needs no safetensors: the round trip is still checked
        safetensors_torch = None
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = Path(tmp) / "a.safetensors", Path(tmp) / "b.safetensors"
        save_tensors(ours, tensors, {"k": "v"})
        paths = [ours]
        if safetensors_torch is not None:
            safetensors_torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(theirs))
            paths.append(theirs)
        for path in paths:
            header = read_header(path)
            assert {k: (e.shape, DTYPES[e.dtype]) for k, e in header.items()} == \
                {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
            back = load_tensors(path)
            assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
        if safetensors_torch is not None:
            read = safetensors_torch.load_file(str(ours))
            assert all(torch.equal(read[k], tensors[k]) for k in tensors)
        assert sorted(p.name for p in Path(tmp).iterdir()) == [p.name for p in paths]  # no temporary file left


def test_bad_values_and_views() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with pytest.raises(CheckpointError, match="cannot write 'x'"):
            save_tensors(Path(tmp) / "a.safetensors", {"x": [1, 2]})  # type: ignore[dict-item]
        assert list(Path(tmp).iterdir()) == []
    with pytest.raises(InvalidArgumentError, match="contiguous"):
        memory_of(torch.zeros(3, 4).t())
    assert bytes(memory_of(torch.tensor([1, 2], dtype=torch.uint8))) == b"\x01\x02"
