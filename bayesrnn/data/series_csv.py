"""Reading a series CSV: a bounded regular file, no NUL bytes, numbers a float64 holds exactly.

pandas reads a NUL byte inside a field as part of the text, so a damaged file could load with
a column silently out of use; an integer such as 10³⁰ comes back as a Python int in a column
of objects, and one beyond 2⁵³ has no exact float64. Both are refused here with the column and
row, before the values reach :func:`bayesrnn.data.series.split_series` (which refuses values
that are not finite, too large to square, subnormal, or a constant target).

Rows are counted from 0 (the first row after the header), as in the split's messages; the
file line is named beside it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bayesrnn.data.checksums import DataError
from bayesrnn.data.input_files import read_input_bytes

__all__ = ["EXACT_INTEGER_LIMIT", "csv_values", "read_csv_table"]

EXACT_INTEGER_LIMIT = 2**53  # the largest range of integers a float64 holds exactly


def _nul_position(data: bytes, path: Path) -> DataError | None:
    """The first NUL byte as a DataError naming its row, line and column; None if none."""
    at = data.find(b"\x00")
    if at < 0:
        return None
    line_start = data.rfind(b"\n", 0, at) + 1
    line = data.count(b"\n", 0, at) + 1
    field = data.count(b",", line_start, at)
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").split(",")
    column = header[field].strip() if field < len(header) else f"field {field + 1}"
    where = "the header" if line == 1 else f"row {line - 2} (line {line})"
    return DataError(
        f"{path.name}: a NUL byte in {where}, column {column!r}, at byte offset {at}: the file "
        "is damaged or not text; repair or re-export it"
    )


def read_csv_table(path: str | Path, what: str = "data file"):
    """The CSV at ``path`` as a pandas DataFrame with at least one row, or a DataError."""
    import pandas

    path = Path(path)
    data = read_input_bytes(path, what)
    nul = _nul_position(data, path)
    if nul is not None:
        raise nul
    try:
        frame = pandas.read_csv(io.BytesIO(data))
    except (pandas.errors.EmptyDataError, pandas.errors.ParserError, UnicodeDecodeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"cannot read {path} as CSV: {message}") from None
    if frame.shape[0] == 0:
        columns = [str(c) for c in frame.columns]
        raise DataError(f"{path.name}: a header {columns} and no rows of values")
    return frame


def _column_values(column, file: str) -> np.ndarray:
    """One column as float64, refusing text and integers beyond 2⁵³ by row."""
    import pandas

    name = str(column.name)
    if pandas.api.types.is_integer_dtype(column) or column.dtype == object:
        for row, value in enumerate(column.tolist()):
            if (
                isinstance(value, int | np.integer)
                and not isinstance(value, bool)
                and abs(int(value)) > EXACT_INTEGER_LIMIT
            ):
                raise DataError(
                    f"{file}: column {name!r} row {row} (line {row + 2}) holds the integer "
                    f"{value}, beyond 2**53: a float64 cannot hold it exactly; rescale the "
                    "column (or write it as a float, e.g. 1e+30)"
                )
    if pandas.api.types.is_numeric_dtype(column) and not pandas.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64)
    numbers = pandas.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()).to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{file}: column {name!r} is not numeric (row {row}, line {row + 2}: "
            f"{str(column.iloc[row])!r})"
        )
    return numbers.to_numpy(dtype=np.float64)


def csv_values(frame, columns: Sequence[str], file: str) -> np.ndarray:
    """The ``columns`` of ``frame`` as a float64 (N, len(columns)) array, checked by row."""
    if not columns:
        return np.zeros((frame.shape[0], 0))
    return np.stack([_column_values(frame[name], file) for name in columns], axis=1)
