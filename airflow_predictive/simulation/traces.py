"""Load demand traces (CSV files) into one regular, UTC-indexed float series each.

Formats understood without options (see ``../shared/data/traces/README.md``):

- ``timestamp,value`` (NAB): ISO timestamps; a timestamp without a zone is taken as UTC.
- header-only, fixed-interval, several columns (Alibaba 2018 aggregated): no time column; the rows
  are consecutive buckets of ``interval`` (from ``--interval`` or a ``<N>_seconds`` file name); the
  default value column is ``cpu_util_percent``.
- ``;\\t`` separated (Bitbrains GWA-T-12): ``Timestamp [ms]`` that really holds Unix epoch seconds;
  the default value column is ``CPU usage [MHZ]``.
- header-less files: one or more numeric columns, fixed interval; columns are named ``0``, ``1``...

Two irregularities are normalised, always the same way:

- **Repeated timestamps** (NAB's daylight-saving change writes the skipped hour as 12 rows all
  stamped ``03:00:00``): the file order is kept and the repeats are *re-timed* one interval apart
  after the previous distinct timestamp, when they fit before the next distinct timestamp (they fit
  exactly in NAB: 02:04 ... 02:59); repeats that do not fit are averaged into one bucket. No sample
  is dropped when the re-timing fits, which is what a replay needs (each row is one interval of
  demand).
- **Gaps and jitter**: timestamps are snapped to a regular grid of ``interval`` anchored at the first
  sample (samples in the same bucket are averaged) and missing buckets are filled by linear
  interpolation in time. ``series.attrs`` records ``filled`` (buckets filled), ``retimed`` (rows
  re-timed) and ``source`` (file path) so a report can say what was changed.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: Default value column per recognised layout (first match wins).
DEFAULT_VALUE_COLUMNS: tuple[str, ...] = ("value", "cpu_util_percent", "CPU usage [MHZ]")
#: Column names recognised as the time column, in order of preference.
TIME_COLUMNS: tuple[str, ...] = ("timestamp", "Timestamp [ms]", "ts", "time", "ds", "date")
#: Unix epoch values in a time column above this are milliseconds, below are seconds.
_EPOCH_MS_THRESHOLD = 10**11
_SECONDS_IN_NAME = re.compile(r"(\d+)_seconds")
#: Longest interval pandas can hold (about 292 years).
_MAX_INTERVAL_S = pd.Timedelta.max.total_seconds()


class TraceError(ValueError):
    """A trace file cannot be loaded; the message names the file and the problem."""


@dataclass(frozen=True)
class TraceSpec:
    """How to read one trace file (every field optional: ``None`` means infer).

    :param path: the CSV file.
    :param time_column: name of the time column; ``None`` to detect; ``""`` for fixed-interval rows.
    :param value_column: name (or 0-based index for header-less files) of the demand column.
    :param sep: column separator; ``None`` to sniff (``,``, ``;``, ``;\\t``, tab).
    :param interval: the bucket size, as a pandas offset/Timedelta string (``5min``, ``300s``) or
        seconds; required for fixed-interval files whose name does not say ``<N>_seconds``.
    """

    path: Path
    time_column: str | None = None
    value_column: str | None = None
    sep: str | None = None
    interval: str | int | float | pd.Timedelta | None = None


def duration(value: str | pd.Timedelta) -> pd.Timedelta:
    """``pd.Timedelta`` of a duration string, accepting ``3d`` (pandas deprecates the lowercase day unit).

    :param value: e.g. ``5min``, ``90s``, ``3d``, ``1 day``.
    """
    if isinstance(value, str):
        value = re.sub(r"(?<=\d)\s*d$", "D", value.strip())
    return pd.Timedelta(value)


def parse_interval(value: str | int | float | pd.Timedelta | None) -> pd.Timedelta | None:
    """Turn ``5min``, ``300s``, ``300`` or a Timedelta into a positive Timedelta (``None`` stays).

    :param value: the interval as given on the command line or in code.
    """
    if value is None or isinstance(value, pd.Timedelta):
        return value
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        seconds = float(value)
        # pandas would answer inf or 1e300 with "Cannot construct Timedelta from {'seconds': inf}".
        if not math.isfinite(seconds) or seconds > _MAX_INTERVAL_S:
            raise ValueError(f"invalid interval {value!r}: give a finite number of seconds, e.g. 300")
        delta = pd.Timedelta(seconds=seconds)
    else:
        try:
            delta = duration(str(value))
        except ValueError as exc:
            raise ValueError(f"invalid interval {value!r}: use e.g. 300, 300s, 5min or 1h") from exc
    if delta <= pd.Timedelta(0):
        raise ValueError(f"invalid interval {value!r}: it must be positive")
    return delta


def load_trace(
    path: str | Path,
    *,
    time_column: str | None = None,
    value_column: str | None = None,
    sep: str | None = None,
    interval: str | int | float | pd.Timedelta | None = None,
) -> pd.Series:
    """Load one demand trace as a regular float series on a UTC DatetimeIndex, named after the file.

    :param path: the CSV file.
    :param time_column: the time column; ``None`` to detect one; ``""`` to force fixed-interval rows.
    :param value_column: the demand column (name, or index for header-less files); ``None`` picks
        the format's default (``value``, ``cpu_util_percent``, ``CPU usage [MHZ]``, or the only
        numeric column).
    :param sep: the column separator; ``None`` to sniff it.
    :param interval: bucket size (``5min``, ``300``); ``None`` infers it from the timestamps (median
        step) or, for fixed-interval files, from a ``<N>_seconds`` file name.
    :raises TraceError: the file is missing, unreadable, empty, or its columns are unusable.
    """
    path = Path(path)
    try:
        step = parse_interval(interval)
    except ValueError as exc:
        raise TraceError(f"{path}: {exc}") from None
    text = _read_text(path)
    sep = sep if sep is not None else _sniff_sep(text)
    frame = _read_frame(path, text, sep)
    column = _pick_value_column(path, frame, value_column)
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(
            f"{path}: column {column!r} is not numeric (row {row + 1}: "
            f"{str(frame[column].iloc[row])!r}); pick another with --value-column"
        )
    values = values.astype(float)
    _refuse_infinite(path, column, values)
    if values.notna().sum() == 0:
        raise TraceError(f"{path}: column {column!r} has no values")
    if (values < 0).any():
        row = int(np.flatnonzero((values < 0).to_numpy())[0])
        raise TraceError(
            f"{path}: negative demand in column {column!r} (row {row + 1}: {values.iloc[row]:g}); "
            "demand must be >= 0"
        )
    tcol = _pick_time_column(frame, time_column, column, path)
    if tcol is None:
        step = step or _interval_from_name(path)
        if step is None:
            raise TraceError(
                f"{path}: no time column, so the rows are taken as fixed-interval buckets; "
                "give the bucket size with --interval (e.g. --interval 5min)"
            )
        # Fixed-interval rows have no calendar date; anchor them at the Unix epoch (the Alibaba
        # trace counts seconds from its start too).
        index = pd.date_range("1970-01-01", periods=len(values), freq=step, tz="UTC")
        series = pd.Series(values.to_numpy(), index=index)
        retimed = 0
    else:
        stamps = _parse_times(path, frame[tcol], tcol)
        series = pd.Series(values.to_numpy(), index=stamps).loc[lambda s: s.index.notna()]
        if not series.index.is_monotonic_increasing:
            order = np.argsort(series.index.to_numpy(), kind="stable")
            if _out_of_order_share(series.index) > 0.01:
                raise TraceError(f"{path}: timestamps in {tcol!r} are not in time order")
            series = series.iloc[order]
        step = step or _infer_interval(path, series.index)
        series, retimed = _retime_repeats(series, step)
    series = series.dropna()
    if series.empty:
        raise TraceError(f"{path}: no usable rows (every value or timestamp is missing)")
    regular, filled = _regularise(series, step)
    default = column in DEFAULT_VALUE_COLUMNS or value_column is None
    regular.name = path.stem if default else f"{path.stem}:{column}"
    regular.index.name = "ts"
    regular.attrs.update(
        source=str(path),
        column=str(column),
        interval_s=int(step.total_seconds()),
        filled=int(filled),
        retimed=int(retimed),
    )
    return regular


def load_traces(
    paths: Iterable[str | Path],
    *,
    time_column: str | None = None,
    value_column: str | None = None,
    sep: str | None = None,
    interval: str | int | float | pd.Timedelta | None = None,
) -> list[pd.Series]:
    """Load several traces with the same options (see :func:`load_trace`), in the order given.

    :param paths: the CSV files.
    :param time_column: as in :func:`load_trace`.
    :param value_column: as in :func:`load_trace`; a file lacking it falls back to its default.
    :param sep: as in :func:`load_trace`.
    :param interval: as in :func:`load_trace`.
    """
    traces = []
    for path in paths:
        column = value_column
        if column is not None and not _has_column(Path(path), column, sep):
            column = None
        traces.append(
            load_trace(path, time_column=time_column, value_column=column, sep=sep, interval=interval)
        )
    return traces


def _refuse_infinite(path: Path, column: str, values: pd.Series) -> None:
    infinite = np.isinf(values.to_numpy())
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise TraceError(
            f"{path}: column {column!r} is not a finite number (row {row + 1}: {values.iloc[row]}); "
            "demand must be a finite number >= 0"
        )


# -- reading -------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    if not path.exists():
        raise TraceError(f"{path}: file not found")
    if not path.is_file():
        raise TraceError(f"{path}: not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text CSV file (it is not UTF-8)") from None
    if not text.strip():
        raise TraceError(f"{path}: the file is empty")
    return text


def _sniff_sep(text: str) -> str:
    first = text.lstrip().splitlines()[0]
    if ";\t" in first:
        return ";\t"
    counts = {sep: first.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _read_frame(path: Path, text: str, sep: str) -> pd.DataFrame:
    header = _has_header(text, sep)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=re.escape(sep) if len(sep) > 1 else sep,
            engine="python" if len(sep) > 1 else "c",
            header=0 if header else None,
            skipinitialspace=True,
            dtype=str,
        )
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        raise TraceError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise TraceError(f"{path}: the file has a header but no data rows")
    return frame


def _has_header(text: str, sep: str) -> bool:
    first = text.lstrip().splitlines()[0]
    cells = [c.strip() for c in first.split(sep)]
    return not all(_is_number(c) or _looks_like_time(c) for c in cells if c)


def _has_column(path: Path, column: str, sep: str | None) -> bool:
    try:
        text = _read_text(path)
    except TraceError:
        return True  # let load_trace report the real problem
    first = text.lstrip().splitlines()[0]
    sep = sep if sep is not None else _sniff_sep(text)
    return column in [c.strip() for c in first.split(sep)] or not _has_header(text, sep)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _looks_like_time(cell: str) -> bool:
    return bool(re.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?", cell))


def _pick_value_column(path: Path, frame: pd.DataFrame, wanted: str | None) -> str:
    columns = list(frame.columns)
    if wanted is not None:
        if str(wanted) in columns:
            return str(wanted)
        raise TraceError(f"{path}: no column {wanted!r}; the columns are {', '.join(map(repr, columns))}")
    for name in DEFAULT_VALUE_COLUMNS:
        if name in columns:
            return name
    numeric = [
        c
        for c in columns
        if c not in TIME_COLUMNS and pd.to_numeric(frame[c], errors="coerce").notna().mean() > 0.5
    ]
    if len(numeric) == 1:
        return numeric[0]
    if not numeric:
        raise TraceError(f"{path}: no numeric column to use as demand")
    raise TraceError(
        f"{path}: several numeric columns ({', '.join(map(repr, numeric))}); choose one with --value-column"
    )


def _pick_time_column(frame: pd.DataFrame, wanted: str | None, value_column: str, path: Path) -> str | None:
    if wanted == "":
        return None
    if wanted is not None:
        if wanted not in frame.columns:
            raise TraceError(
                f"{path}: no time column {wanted!r}; the columns are {', '.join(map(repr, frame.columns))}"
            )
        return wanted
    for name in TIME_COLUMNS:
        if name in frame.columns and name != value_column:
            return name
    # A header-less file whose first column holds dates.
    first = frame.columns[0]
    if first != value_column and frame[first].astype(str).head(5).map(_looks_like_time).all():
        return first
    return None


def _parse_times(path: Path, column: pd.Series, name: str) -> pd.DatetimeIndex:
    text = column.astype(str).str.strip()
    numeric = pd.to_numeric(text, errors="coerce")
    if numeric.notna().all():
        # Epoch numbers. Bitbrains labels its column "[ms]" but writes seconds, so decide by size.
        unit = "ms" if numeric.abs().median() > _EPOCH_MS_THRESHOLD else "s"
        try:
            return pd.DatetimeIndex(pd.to_datetime(numeric, unit=unit, utc=True)).as_unit("ns")
        except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
            row = _first_out_of_range(numeric, unit)
            raise TraceError(
                f"{path}: time column {name!r} holds an epoch value outside the years 1677-2262 "
                f"(row {row + 1}: {text.iloc[row]}); use Unix seconds or milliseconds"
            ) from None
    try:
        stamps = pd.to_datetime(text, utc=True, format="mixed")
    except (ValueError, TypeError) as exc:
        raise TraceError(
            f"{path}: time column {name!r} has values that are not timestamps ({str(exc).splitlines()[0]})"
        ) from None
    if stamps.isna().mean() > 0.5:
        raise TraceError(f"{path}: time column {name!r} is mostly not timestamps")
    return pd.DatetimeIndex(stamps).as_unit("ns")


def _first_out_of_range(epochs: pd.Series, unit: str) -> int:
    limit = pd.Timestamp.max.value / (1e9 if unit == "s" else 1e6)
    values = epochs.to_numpy(dtype=float)
    out = ~np.isfinite(values) | (np.abs(values) >= limit)
    return int(np.argmax(out))  # 0 when pandas refused for another reason


def _out_of_order_share(index: pd.DatetimeIndex) -> float:
    steps = np.diff(index.asi8)
    return float((steps < 0).mean()) if len(steps) else 0.0


def _infer_interval(path: Path, index: pd.DatetimeIndex) -> pd.Timedelta:
    steps = np.diff(index.unique().as_unit("ns").asi8)
    steps = steps[steps > 0]
    if len(steps) == 0:
        raise TraceError(f"{path}: cannot infer the interval from one timestamp; give --interval")
    seconds = float(np.median(steps)) / 1e9
    # 299-301 s jitter (Bitbrains) is one 300 s interval.
    rounded = round(seconds / 60) * 60 if seconds >= 60 else round(seconds)
    return pd.Timedelta(seconds=max(rounded, 1))


def _interval_from_name(path: Path) -> pd.Timedelta | None:
    match = _SECONDS_IN_NAME.search(path.name)
    return pd.Timedelta(seconds=int(match[1])) if match else None


def _retime_repeats(series: pd.Series, step: pd.Timedelta) -> tuple[pd.Series, int]:
    """Spread runs of one repeated timestamp one ``step`` apart after the previous distinct stamp.

    A run of ``k`` rows at ``t`` between distinct stamps ``p`` and ``n`` becomes ``p + step, ...,
    p + k*step`` when ``p + k*step < n`` (and ``p + step <= t``); otherwise the run keeps ``t`` and is
    averaged later.
    """
    index = series.index
    if index.is_unique:
        return series, 0
    stamps = index.as_unit("ns").asi8.copy()
    unit = int(step.value)
    retimed = 0
    i = 0
    n = len(stamps)
    while i < n:
        j = i
        while j + 1 < n and stamps[j + 1] == stamps[i]:
            j += 1
        run = j - i + 1
        if run > 1 and i > 0:
            previous = stamps[i - 1]
            following = stamps[j + 1] if j + 1 < n else None
            last = previous + run * unit
            if previous + unit <= stamps[i] and (following is None or last < following):
                stamps[i : j + 1] = previous + unit * np.arange(1, run + 1)
                retimed += run
        i = j + 1
    new_index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ns", utc=True))
    return pd.Series(series.to_numpy(), index=new_index), retimed


def _regularise(series: pd.Series, step: pd.Timedelta) -> tuple[pd.Series, int]:
    start = series.index[0]
    offsets = (series.index - start) / step
    buckets = np.floor(np.asarray(offsets, dtype=float) + 0.5).astype(np.int64)
    grouped = series.groupby(buckets).mean()
    full = np.arange(int(grouped.index.max()) + 1)
    regular = grouped.reindex(full)
    filled = int(regular.isna().sum())
    if filled:
        regular = regular.interpolate(method="linear", limit_direction="both")
    index = pd.DatetimeIndex(start + step * full)
    return pd.Series(regular.to_numpy(dtype=float), index=index), filled


def describe(series: pd.Series) -> str:
    """One line on what a loaded trace is: name, points, interval, span, what was filled/re-timed.

    :param series: a series returned by :func:`load_trace`.
    """
    attrs = series.attrs
    span = series.index[-1] - series.index[0]
    days = span / pd.Timedelta(days=1)
    return (
        f"{series.name}: {len(series)} points of {attrs.get('interval_s', '?')} s "
        f"({days:.1f} days), column {attrs.get('column', '?')!r}, "
        f"{attrs.get('filled', 0)} filled, {attrs.get('retimed', 0)} re-timed"
    )
