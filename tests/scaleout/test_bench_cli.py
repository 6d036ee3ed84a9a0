"""``airflow-predictive bench scaleout``: bad input is refused with one message and exit code 2."""

from __future__ import annotations

import pytest
from airflow_predictive_tools.bench.scaleout_seed import pool_names, pools_yaml

from airflow_predictive.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["--series", "0"],
        ["--series", "100,x"],
        ["--workers", ""],
        ["--chunk", "0"],
        ["--days", "1"],
        ["--size-sample", "-1"],
    ],
)
def test_bad_input_exits_2(argv, capsys) -> None:
    assert main(["bench", "scaleout", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--" in err


def test_pools_file_modes() -> None:
    from airflow_predictive.contracts.pools import load_pools

    pools = pool_names(10)
    assert pools == ["scale-0000", "scale-0001", "scale-0002"]
    text = pools_yaml(pools, scale=["scale-0001"])
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pools.yaml"
        path.write_text(text)
        loaded = load_pools(path)
    assert sorted(loaded) == pools
    assert {n: p.mode.value for n, p in loaded.items()} == {
        "scale-0000": "forecast_only",
        "scale-0001": "forecast_and_scale",
        "scale-0002": "forecast_only",
    }
