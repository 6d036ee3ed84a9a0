"""Test plugin: custom timetables, registered the Airflow 3 way (``AirflowPlugin.timetables``).

The API server and the scheduler can only deserialize a DAG with a custom timetable when a plugin
registers its class; the DAG files in ``tests/templates/dags`` import the classes from this module.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable
from pendulum import DateTime


class TwiceDailyTimetable(Timetable):
    """Runs at two fixed UTC hours every day (e.g. 06:00 and 18:00), each covering the previous half-day.

    :param hours: the two UTC hours.
    """

    def __init__(self, hours: tuple[int, int] = (6, 18)) -> None:
        self.hours = tuple(sorted(hours))

    @property
    def summary(self) -> str:
        return f"twice daily at {self.hours[0]:02d}:00 and {self.hours[1]:02d}:00 UTC"

    def serialize(self) -> dict:
        return {"hours": list(self.hours)}

    @classmethod
    def deserialize(cls, data: dict) -> TwiceDailyTimetable:
        return cls(tuple(data["hours"]))

    def _next_slot(self, after: DateTime) -> DateTime:
        day = after.start_of("day")
        for offset in range(3):
            for hour in self.hours:
                slot = day.add(days=offset, hours=hour)
                if slot > after:
                    return slot
        raise AssertionError("unreachable")

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval(run_after - timedelta(hours=12), run_after)

    def next_dagrun_info(self, *, last_automated_data_interval, restriction) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            end = self._next_slot(last_automated_data_interval.end)
        else:
            if restriction.earliest is None:
                return None
            start = restriction.earliest
            if not restriction.catchup:
                start = max(start, DateTime.utcnow().replace(tzinfo=start.tzinfo))
            end = self._next_slot(start - timedelta(microseconds=1))
        if restriction.latest is not None and end > restriction.latest:
            return None
        return DagRunInfo.interval(start=end - timedelta(hours=12), end=end)


class UnreachableCalendarTimetable(Timetable):
    """A timetable whose schedule lives in an external calendar that cannot be reached (always raises)."""

    @property
    def summary(self) -> str:
        return "business calendar (external)"

    def serialize(self) -> dict:
        return {}

    @classmethod
    def deserialize(cls, data: dict) -> UnreachableCalendarTimetable:
        return cls()

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval, restriction) -> DagRunInfo | None:
        raise ConnectionError("business calendar service unreachable")


class TemplateTestTimetablesPlugin(AirflowPlugin):
    name = "template_test_timetables"
    timetables = [TwiceDailyTimetable, UnreachableCalendarTimetable]
