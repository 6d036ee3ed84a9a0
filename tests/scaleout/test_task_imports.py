"""The allocate and evaluate tasks import no forecasting engine: each task is a fresh process, and
scipy's import alone cost every such task 1-3 s of a 60-second loop (docs/benchmarks.md, issue #16)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "pmdarima", "statsmodels", "sklearn")

# What an allocate, evaluate or close_evaluation task imports to run (operators, then their work).
TASK_IMPORTS = """
import json, sys
import airflow_predictive.operators.preemptive_allocate
import airflow_predictive.operators.forecast_evaluation
import airflow_predictive.hooks.profile_store
from airflow_predictive.runtime import allocation_cycle, feedback_cycle, learning, service_level_choice
print(json.dumps(sorted(m for m in %r if m in sys.modules)))
"""


def test_allocate_and_evaluate_tasks_do_not_import_the_forecasting_engine() -> None:
    out = subprocess.run(
        [sys.executable, "-c", TASK_IMPORTS % (HEAVY,)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_forecast_task_still_imports_it() -> None:
    """The check above can fail: the forecasting engine does import scipy."""
    probe = "import json, sys; import airflow_predictive.forecasting.engine; print(json.dumps('scipy' in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) is True
