"""The trace loaders read every supported format into a regular UTC float series, or say what is wrong.

NAB files come from the repository's sample traces (``examples/traces``, MIT); the Alibaba and
Bitbrains layouts, whose data the repository may not redistribute, are written here in their exact
format (header, separator, time encoding) with made-up values.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from airflow_predictive.simulation.traces import TraceError, load_trace, load_traces

TRACES = Path(__file__).resolve().parents[2] / "examples" / "traces"
ALIBABA_NAME = "dctraces_alibaba2018_machine_usage_days_1_to_8_grouped_300_seconds.csv"
BITBRAINS_HEADER = ";\t".join(
    [
        "Timestamp [ms]",
        "CPU cores",
        "CPU capacity provisioned [MHZ]",
        "CPU usage [MHZ]",
        "CPU usage [%]",
        "Memory capacity provisioned [KB]",
        "Memory usage [KB]",
        "Disk read throughput [KB/s]",
        "Disk write throughput [KB/s]",
        "Network received throughput [KB/s]",
        "Network transmitted throughput [KB/s]",
    ]
)


@pytest.fixture
def alibaba(tmp_path) -> Path:
    """The aggregated Alibaba 2018 layout: a header, no time column, interval in the file name."""
    path = tmp_path / ALIBABA_NAME
    rows = [f"{16.126976521322472 + i},{87.13895543842837 - i},34.9,27.7,4.1" for i in range(6)]
    path.write_text(
        "cpu_util_percent,mem_util_percent,net_in,net_out,disk_io_percent\n" + "\n".join(rows) + "\n"
    )
    return path


@pytest.fixture
def bitbrains(tmp_path) -> Path:
    """The Bitbrains GWA-T-12 layout: ``;\\t`` separated, epoch seconds under ``Timestamp [ms]``,
    300 s steps with 1 s jitter and one 2,704 s gap (as in the real files)."""
    start = 1372629804
    offsets = [0, 300, 601, 900, 1200, 1200 + 2704, 1200 + 2704 + 300]
    rows = [
        ";\t".join(
            [
                str(start + off),
                "1",
                "2399.999679",
                f"{2126.399715594 + i}",
                "88.6",
                "3143680.0",
                "548054.1",
                "7.0",
                "308.1",
                "273.4",
                "21.3",
            ]
        )
        for i, off in enumerate(offsets)
    ]
    path = tmp_path / "bitbrains_rnd_2013-7_407.csv"
    path.write_text(BITBRAINS_HEADER + "\n" + "\n".join(rows) + "\n")
    return path


def _regular(series: pd.Series, seconds: int) -> None:
    assert str(series.index.tz) == "UTC"
    assert series.dtype == float
    assert (series.index.to_series().diff().dropna() == pd.Timedelta(seconds=seconds)).all()
    assert not series.isna().any()


def test_nab_file_loads_as_five_minute_utc_series_named_after_the_file():
    series = load_trace(TRACES / "nab_rds_cpu_utilization_e47b3b.csv")
    _regular(series, 300)
    assert series.name == "nab_rds_cpu_utilization_e47b3b"
    assert len(series) == 4032
    assert series.index[0] == pd.Timestamp("2014-04-10 00:02:00", tz="UTC")
    assert series.iloc[0] == pytest.approx(14.012)


def test_nab_daylight_saving_repeats_are_retimed_into_the_skipped_hour_in_file_order():
    series = load_trace(TRACES / "nab_ec2_disk_write_bytes_1ef3de.csv")
    _regular(series, 300)
    assert len(series) == 4730  # every row kept, none averaged away
    assert series.attrs["retimed"] == 12
    window = series["2014-03-09 01:59":"2014-03-09 03:04"].index
    assert [t.strftime("%H:%M") for t in window] == [
        "01:59",
        *(f"02:{m:02d}" for m in range(4, 60, 5)),
        "03:04",
    ]


def test_nab_gaps_are_filled_on_the_regular_grid():
    series = load_trace(TRACES / "nab_elb_request_count_8c0756.csv")
    _regular(series, 300)
    assert series.attrs["filled"] == 8  # eight 600 s steps, one missing bucket each


def test_alibaba_fixed_interval_file_defaults_to_cpu_and_picks_other_columns(alibaba):
    cpu = load_trace(alibaba)
    _regular(cpu, 300)  # the interval comes from "..._300_seconds" in the file name
    assert len(cpu) == 6
    assert cpu.iloc[0] == pytest.approx(16.126976521322472)
    assert cpu.iloc[5] == pytest.approx(21.126976521322472)
    mem = load_trace(alibaba, value_column="mem_util_percent")
    assert mem.iloc[0] == pytest.approx(87.13895543842837)
    assert mem.name.endswith(":mem_util_percent")


def test_bitbrains_semicolon_tab_file_reads_epoch_seconds_and_cpu_mhz(bitbrains):
    series = load_trace(bitbrains)
    _regular(series, 300)
    assert series.index[0] == pd.Timestamp("2013-06-30 22:03:24", tz="UTC")
    assert series.iloc[0] == pytest.approx(2126.399715594)
    assert series.iloc[2] == pytest.approx(2128.399715594)  # the 1 s jitter snaps onto the grid
    # 2,704 s after 22:23:24 is bucket 22:68:28 -> snapped to 23:08:24: eight buckets filled between.
    assert series.attrs["filled"] == 8
    assert len(series) == 5 + 8 + 2


def test_headerless_fixed_interval_file_needs_and_uses_interval(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("1.5\n2\n3\n")
    with pytest.raises(TraceError, match="plain.csv.*--interval"):
        load_trace(path)
    series = load_trace(path, interval="1min")
    assert list(series) == [1.5, 2.0, 3.0]
    _regular(series, 60)


def test_custom_columns_separator_and_zoned_timestamps(tmp_path):
    path = tmp_path / "custom.csv"
    path.write_text(
        "when;load;other\n2024-01-01T01:00:00+01:00;4;x\n2024-01-01T00:10:00Z;6;y\n"
        "2024-01-01T00:15:00Z;7;z\n2024-01-01T00:20:00Z;8;z\n"
    )
    series = load_trace(path, time_column="when", value_column="load", sep=";")
    assert series.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert list(series) == [4.0, 5.0, 6.0, 7.0, 8.0]  # the missing 00:05 bucket is interpolated


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("timestamp,value\n", "no data rows"),
        ("timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,abc\n", "not numeric"),
        ("timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,-3\n", "negative demand"),
        (b"\xff\xfe\x00binary", "not a text CSV"),
        (
            "timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,inf\n",
            r"'value' is not a finite number \(row 2: inf\)",
        ),
        (
            "timestamp,value\n2024-01-01 00:00,1\n2024-01-01 00:05,-inf\n",
            r"'value' is not a finite number \(row 2: -inf\)",
        ),
        (
            "timestamp,value\n1700000000,1\ninf,2\n",
            r"'timestamp' holds an epoch value outside .*\(row 2: inf\)",
        ),
        (
            "timestamp,value\n1700000000,1\n1e300,2\n",
            r"'timestamp' holds an epoch value outside .*\(row 2: 1e300\)",
        ),
    ],
)
def test_bad_files_raise_one_error_naming_file_and_problem(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TraceError, match=rf"bad\.csv.*{problem}"):
        load_trace(path)


def test_missing_file_and_missing_column_are_named(tmp_path):
    with pytest.raises(TraceError, match="nope.csv: file not found"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(TraceError, match="no column 'bogus'"):
        load_trace(TRACES / "nab_rds_cpu_utilization_e47b3b.csv", value_column="bogus")


def test_load_traces_keeps_order_and_lets_each_file_use_its_default_column(alibaba):
    first, second = load_traces([alibaba, TRACES / "nab_rds_cpu_utilization_e47b3b.csv"])
    assert first.attrs["column"] == "cpu_util_percent"
    assert second.attrs["column"] == "value"


@pytest.mark.parametrize("interval", ["inf", float("inf"), "nan", 1e300])
def test_an_interval_that_is_not_a_finite_number_of_seconds_is_named(tmp_path, interval):
    path = tmp_path / "rows.csv"
    path.write_text("1\n2\n3\n")
    with pytest.raises(TraceError, match=r"rows\.csv: invalid interval .*: give a finite number of seconds"):
        load_trace(path, interval=interval)
