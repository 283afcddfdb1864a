"""Frames built from arrays at a fixed cost, for the service's one-account calls.

``pd.DataFrame(dict_of_arrays)`` infers, copies and consolidates column by column: for a
60-column row that is ~0.3 ms, more than the arithmetic behind it. :func:`frame_from_arrays`
builds the same frame (values, dtypes, column order, index) from its blocks directly: every
numpy dtype's columns as one 2-D block, each extension array as its own block, and object
columns of text as ``str``, as the constructor infers them.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.extensions import ExtensionArray
from pandas.api.internals import create_dataframe_from_blocks
from pandas.api.types import infer_dtype

TEXT = pd.StringDtype(na_value=np.nan)  # what the constructor infers for an object array of text
_FAST_KINDS = "fiub"  # numpy kinds the constructor keeps as they are (float, int, unsigned, bool)


@dataclass(frozen=True)
class Columns:
    """A frame's column names in order, as a tuple and as the column index the constructor would
    make (:meth:`of`: build it once and keep it; iterating an index of text costs ~1 µs a name)."""

    names: tuple[str, ...]
    index: pd.Index

    @classmethod
    def of(cls, names: Sequence[str]) -> "Columns":
        return cls(tuple(names), pd.DataFrame(columns=list(names)).columns)


def frame_from_arrays(
    columns: Mapping[str, np.ndarray | ExtensionArray], *, index: pd.Index, names: Columns
) -> pd.DataFrame:
    """``pd.DataFrame({c: columns[c] for c in names}, index=index)``, without its per-column cost.

    ``columns`` holds 1-D arrays of ``len(index)``: numpy arrays of a float, integer or bool
    dtype, numpy object arrays (text: as the constructor, ``str`` where every value is text or
    missing), or extension arrays (copied as they are). ``names``: the columns wanted, in order.
    Anything else (an object array not of text, say) goes through the constructor.
    """
    by_dtype: dict[np.dtype, list[int]] = {}
    extension: list[tuple[ExtensionArray | np.ndarray, np.ndarray]] = []
    arrays = [columns[c] for c in names.names]
    for position, values in enumerate(arrays):
        if isinstance(values, np.ndarray) and values.dtype.kind in _FAST_KINDS:
            by_dtype.setdefault(values.dtype, []).append(position)
        elif isinstance(values, np.ndarray) and values.dtype == object and infer_dtype(values, skipna=True) == "string":
            extension.append((pd.array(values, dtype=TEXT), np.array([position])))
        elif isinstance(values, ExtensionArray):
            extension.append((values.copy(), np.array([position])))
        else:
            return pd.DataFrame(dict(zip(names.names, arrays, strict=True)), index=index)
    blocks = [(_stacked(arrays, where, dtype, len(index)), np.array(where)) for dtype, where in by_dtype.items()]
    # a copy of the kept index, so that renaming one frame's columns changes no other frame
    return create_dataframe_from_blocks(blocks + extension, index=index, columns=names.index.copy())


def _stacked(arrays: list, where: list[int], dtype: np.dtype, n: int) -> np.ndarray:
    """The columns ``where`` of ``arrays`` as one (columns, rows) block, a copy of their values."""
    out = np.empty((len(where), n), dtype=dtype)
    for row, position in enumerate(where):
        out[row] = arrays[position]
    return out
