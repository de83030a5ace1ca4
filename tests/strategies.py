"""Shared hypothesis strategies for fprune tests.

Tensors are built from a drawn seed through a private ``torch.Generator``
(fast, and shrinks well); the drawn shape, dtype and seed show up in failure
reports.  Score vectors are drawn from a small set of values so that ties are
common, or as distinct values when a property needs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from hypothesis import settings
from hypothesis import strategies as st
from torch import Tensor

__all__ = [
    "FLOAT_DTYPES",
    "TIE_VALUES",
    "seeds",
    "weights",
    "score_vectors",
    "named_score_vectors",
    "sparsities",
    "lstm_weights",
    "powers_of_two",
    "layer_widths",
    "examples",
    "calibration_batches",
]

FLOAT_DTYPES = (torch.float32, torch.float64)  # the dtypes scorers and masks are tested in
TIE_VALUES = (-1.0, 0.0, 0.25, 0.5, 1.0, 2.0, 3.5)  # few, exactly representable: many ties


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator.manual_seed``."""
    return st.integers(min_value=0, max_value=2**32 - 1)


def _randn(shape: Sequence[int], seed: int, dtype: torch.dtype) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(dtype)


@st.composite
def weights(
    draw: st.DrawFn,
    min_rows: int = 1,
    max_rows: int = 8,
    ndim: int | None = 2,
    max_cols: int = 5,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    ties: bool = False,
) -> Tensor:
    """Random weights ``[rows, ...]`` with ``ndim`` dims (2 to 4 when ``None``).

    With ``ties=True`` some rows are copies of others (equal scores).
    """
    dims = draw(st.integers(2, 4)) if ndim is None else ndim
    rows = draw(st.integers(min_rows, max_rows))
    trailing = draw(st.lists(st.integers(1, max_cols), min_size=dims - 1, max_size=dims - 1))
    dtype = draw(st.sampled_from(tuple(dtypes)))
    weight = _randn((rows, *trailing), draw(seeds()), dtype)
    if ties and rows > 1:
        sources = draw(st.lists(st.integers(0, rows - 1), min_size=rows, max_size=rows))
        weight = weight[torch.tensor(sources)]
    return weight


@st.composite
def score_vectors(
    draw: st.DrawFn,
    min_size: int = 1,
    max_size: int = 24,
    distinct: bool = False,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
) -> Tensor:
    """1-D float scores; from :data:`TIE_VALUES` (many ties) unless ``distinct``."""
    dtype = draw(st.sampled_from(tuple(dtypes)))
    if distinct:
        ints = draw(
            st.lists(st.integers(-512, 512), min_size=min_size, max_size=max_size, unique=True)
        )
        return torch.tensor(ints, dtype=dtype) / 8  # exact in float32 and float64
    values = draw(st.lists(st.sampled_from(TIE_VALUES), min_size=min_size, max_size=max_size))
    return torch.tensor(values, dtype=dtype)


@st.composite
def named_score_vectors(
    draw: st.DrawFn,
    min_groups: int = 1,
    max_groups: int = 4,
    min_size: int = 1,
    max_size: int = 12,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Tensor]:
    """Named score vectors (names ``g0``, ``g1``, ...), positive values with ties."""
    count = draw(st.integers(min_groups, max_groups))
    return {
        f"g{i}": draw(score_vectors(min_size, max_size, dtypes=(dtype,))).abs()
        for i in range(count)
    }


def sparsities() -> st.SearchStrategy[float]:
    """Valid sparsities: any float in ``[0, 1)`` plus the edge cases."""
    return st.one_of(
        st.sampled_from((0.0, 0.25, 0.5, 0.75, 0.999)),
        st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    )


def powers_of_two() -> st.SearchStrategy[float]:
    """Positive factors that scale floats exactly."""
    return st.sampled_from((0.125, 0.5, 2.0, 4.0, 16.0))


@st.composite
def lstm_weights(
    draw: st.DrawFn, max_hidden: int = 6, max_in: int = 5
) -> tuple[Tensor, int]:
    """A packed LSTM weight ``[4 * H, in]`` (float64) and its hidden size ``H``."""
    hidden = draw(st.integers(1, max_hidden))
    inputs = draw(st.integers(1, max_in))
    return _randn((4 * hidden, inputs), draw(seeds()), torch.float64), hidden


def layer_widths(min_layers: int = 2, max_layers: int = 5, max_width: int = 8) -> st.SearchStrategy[list[int]]:
    """Feature widths of an MLP, input first: ``[w0, w1, ..., wk]`` for ``k`` Linear layers."""
    return st.lists(st.integers(1, max_width), min_size=min_layers + 1, max_size=max_layers + 1)


def examples(ci_count: int) -> int:
    """An example count scaled by the loaded hypothesis profile (ci: 25 per property; thorough: 500)."""
    return max(1, ci_count * settings.default.max_examples // 25)


@st.composite
def calibration_batches(draw: st.DrawFn, width: int, max_batches: int = 3, max_rows: int = 6) -> list[Tensor]:
    """A list of float32 batches ``[rows, width]`` (rows drawn per batch), from drawn seeds."""
    count = draw(st.integers(1, max_batches))
    return [_randn((draw(st.integers(1, max_rows)), width), draw(seeds()), torch.float32) for _ in range(count)]



@st.composite
def query_head_masks(draw: st.DrawFn, units: int, subunits: int) -> Tensor:
    """A keep-mask over ``units * subunits`` query heads: some key/value heads kept (at least one),
    each keeping the same drawn number of its query heads, drawn which."""
    kept_units = draw(st.lists(st.booleans(), min_size=units, max_size=units).filter(any))
    per_unit = draw(st.integers(1, subunits))
    mask = torch.zeros(units, subunits, dtype=torch.bool)
    for u, kept in enumerate(kept_units):
        if kept:
            chosen = draw(st.permutations(range(subunits)))[:per_unit]
            mask[u, list(chosen)] = True
    return mask.reshape(-1)
