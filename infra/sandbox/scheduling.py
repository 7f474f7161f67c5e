"""CreateJob's schedulingConfig: start and end times, and cron maintenance windows.

AWS IoT takes `startTime`/`endTime` as date-time strings and each maintenance
window as a `cron(...)` expression (the six-field form AWS uses elsewhere:
minutes hours day-of-month month day-of-week year, in UTC) plus a duration.
This module parses both and answers the two questions the engine asks: is a
window open at a given time, and when does the next one open.

Supported cron subset (covers AWS's documented daily, weekly and monthly
examples): in every field `*`, numbers, comma lists and `a-b` ranges; `/step`
increments on minutes and hours; month and day-of-week names (JAN-DEC,
SUN-SAT, SUN = 1); `?` in exactly one of day-of-month and day-of-week. The
special characters `L`, `W` and `#` are refused with an `InvalidRequestException`
that says what is accepted.

Invariants: every time here is UTC; occurrences fall on whole minutes; a search
for the next occurrence is bounded (`SEARCH_DAYS`), so a year field that never
matches again yields None instead of looping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from infra.sandbox.errors import invalid_request

__all__ = ["CronSchedule", "MaintenanceWindows", "parse_cron", "parse_datetime"]

SEARCH_DAYS: Final = 5 * 366
_MONTHS: Final = {
    name: index
    for index, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DAYS: Final = {
    name: index
    for index, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)
}
_CRON: Final = re.compile(r"cron\((.*)\)")
_ACCEPTED: Final = (
    "use cron(minutes hours day-of-month month day-of-week year) in UTC with numbers, "
    "lists (1,3), ranges (1-5), * and ? (in exactly one of day-of-month and day-of-week), "
    "/steps on minutes and hours, JAN-DEC and SUN-SAT; for example cron(0 2 ? * * *) "
    "daily at 02:00 or cron(30 22 ? * SAT *) on Saturdays at 22:30"
)


def parse_datetime(value: str, field: str) -> datetime:
    """A schedulingConfig time (`2026-11-28T02:00`, seconds and offset optional; UTC if none)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise invalid_request(
            f"schedulingConfig.{field} {value!r} is not a date and time; "
            "use YYYY-MM-DDTHH:MM (UTC), e.g. 2026-11-28T02:00"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _field_values(
    text: str, low: int, high: int, names: dict[str, int], *, step_ok: bool
) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        if step_text and not step_ok:
            raise ValueError(f"/ steps are accepted on minutes and hours only, not in {text!r}")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{part!r} has a step that is not a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _value(first, names), _value(last, names)
        else:
            start = _value(body, names)
            end = high if step_text else start
        if not low <= start <= high or not low <= end <= high or start > end:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _value(token: str, names: dict[str, int]) -> int:
    upper = token.upper()
    if upper in names:
        return names[upper]
    if not token.isdigit():
        raise ValueError(f"{token!r} is not a number or a name")
    return int(token)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed AWS cron expression: the allowed values of each field (None = any)."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # 1 = Sunday, as AWS counts
    years: frozenset[int] | None

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        if self.years is not None and day.year not in self.years:
            return False
        if self.days_of_month is not None and day.day not in self.days_of_month:
            return False
        weekday = (day.isoweekday() % 7) + 1  # Monday=1..Sunday=7 -> Sunday=1..Saturday=7
        return self.days_of_week is None or weekday in self.days_of_week

    def next_start(self, after: datetime) -> datetime | None:
        """The first occurrence at or after `after`, or None within `SEARCH_DAYS`."""
        start = after.astimezone(UTC)
        if start.second or start.microsecond:
            start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        times = sorted((h, m) for h in self.hours for m in self.minutes)
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for hour, minute in times:
                    candidate = day.replace(hour=hour, minute=minute)
                    if candidate >= start:
                        return candidate
            day += timedelta(days=1)
        return None


def _without_names(field: str) -> str:
    text = field.upper()
    for name in (*_MONTHS, *_DAYS):
        text = text.replace(name, "")
    return text


def parse_cron(expression: str) -> CronSchedule:
    """Parse `cron(...)`; anything outside the supported subset is InvalidRequestException."""
    match = _CRON.fullmatch(expression.strip())
    fields = match.group(1).split() if match else []
    if len(fields) != 6:  # noqa: PLR2004
        raise invalid_request(
            f"maintenance window startTime {expression!r} is not a six-field cron expression; "
            + _ACCEPTED
        )
    minute, hour, dom, month, dow, year = fields
    if (dom == "?") == (dow == "?"):
        raise invalid_request(
            f"maintenance window startTime {expression!r}: put ? in exactly one of "
            "day-of-month and day-of-week; " + _ACCEPTED
        )
    if any(ch in _without_names(field) for field in fields for ch in "LW#"):
        raise invalid_request(
            f"maintenance window startTime {expression!r} uses L, W or #, which the sandbox "
            "does not support; " + _ACCEPTED
        )
    try:
        return CronSchedule(
            expression=expression,
            minutes=frozenset(_field_values(minute, 0, 59, {}, step_ok=True)),
            hours=frozenset(_field_values(hour, 0, 23, {}, step_ok=True)),
            days_of_month=None
            if dom in ("?", "*")
            else frozenset(_field_values(dom, 1, 31, {}, step_ok=False)),
            months=frozenset(_field_values(month, 1, 12, _MONTHS, step_ok=False)),
            days_of_week=None
            if dow in ("?", "*")
            else frozenset(_field_values(dow, 1, 7, _DAYS, step_ok=False)),
            years=None
            if year == "*"
            else frozenset(_field_values(year, 1970, 2199, {}, step_ok=False)),
        )
    except ValueError as exc:
        raise invalid_request(
            f"maintenance window startTime {expression!r}: {exc}; " + _ACCEPTED
        ) from None


@dataclass(frozen=True, slots=True)
class MaintenanceWindows:
    """A job's windows: (schedule, duration in seconds) pairs."""

    windows: tuple[tuple[CronSchedule, float], ...]

    @classmethod
    def parse(cls, config: list[dict[str, object]]) -> MaintenanceWindows:
        return cls(
            tuple(
                (parse_cron(str(w["startTime"])), float(str(w["durationInMinutes"])) * 60.0)
                for w in config
            )
        )

    def open_until(self, now: float) -> float | None:
        """The end of the window open at epoch `now` (the latest, if several), or None."""
        at = datetime.fromtimestamp(now, UTC)
        best: float | None = None
        for schedule, duration in self.windows:
            start = schedule.next_start(
                at - timedelta(seconds=duration) + timedelta(microseconds=1)
            )
            if start is not None and start.timestamp() <= now:
                end = start.timestamp() + duration
                best = end if best is None else max(best, end)
        return best

    def next_open(self, now: float) -> float | None:
        """The epoch start of the next window opening after `now`, or None."""
        at = datetime.fromtimestamp(now, UTC)
        starts = [s.next_start(at) for s, _ in self.windows]
        found = [s.timestamp() for s in starts if s is not None]
        return min(found) if found else None

    def upcoming(self, now: float, count: int) -> list[float]:
        """The next `count` window start times after `now` (DescribeJob's scheduledJobRollouts)."""
        out: list[float] = []
        cursor = now
        while len(out) < count:
            nxt = self.next_open(cursor)
            if nxt is None:
                break
            out.append(nxt)
            cursor = nxt + 60.0
        return out
