"""AWS cron expressions, checked before CreateJob sees them.

A maintenance window's `startTime` is a `cron(...)` expression in the syntax
AWS documents for its schedules (EventBridge's "Cron expressions reference",
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html):
six fields separated by white space,

| field        | values             | wildcards        |
|--------------|--------------------|------------------|
| minutes      | 0-59               | , - * /          |
| hours        | 0-23               | , - * /          |
| day-of-month | 1-31               | , - * ? / L W    |
| month        | 1-12 or JAN-DEC    | , - * /          |
| day-of-week  | 1-7 or SUN-SAT     | , - * ? L #      |
| year         | 1970-2199          | , - * /          |

with `?` in exactly one of day-of-month and day-of-week, and at most one `#`
expression in day-of-week. `check_cron` says what is wrong in words an
operator can act on; it reads no clock and does no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["CronSyntaxError", "check_cron"]

MAX_LENGTH: Final = 256
_STEP_DIGITS: Final = 4  # CronExpression in botocore's iot model: 1-256 characters

_MONTHS: Final = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)
_DAYS: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON: Final = re.compile(r"cron\((?P<body>[^()]*)\)")
_EXAMPLE: Final = (
    "for example cron(0 2 ? * * *) daily at 02:00 UTC, cron(30 22 ? * SAT *) on Saturdays"
)


class CronSyntaxError(ValueError):
    """The expression is not an AWS cron expression; the message says why and what works."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    step: bool = True
    question: bool = False
    last: bool = False
    weekday: bool = False
    nth: bool = False


_FIELDS: Final = (
    _Field("minutes", 0, 59),
    _Field("hours", 0, 23),
    _Field("day-of-month", 1, 31, question=True, last=True, weekday=True),
    _Field("month", 1, 12, names=_MONTHS),
    _Field("day-of-week", 1, 7, names=_DAYS, step=False, question=True, last=True, nth=True),
    _Field("year", 1970, 2199),
)


def _number(token: str, spec: _Field) -> int:
    upper = token.upper()
    if upper in spec.names:
        return spec.names.index(upper) + 1
    if not token.isascii() or not token.isdigit() or len(token) > 4:  # noqa: PLR2004 - years
        allowed = f"{spec.low}-{spec.high}" + (
            f" or {spec.names[0]}-{spec.names[-1]}" if spec.names else ""
        )
        raise CronSyntaxError(f"{token!r} in {spec.name} is not a value ({allowed})")
    value = int(token)
    if not spec.low <= value <= spec.high:
        raise CronSyntaxError(f"{token!r} in {spec.name} is outside {spec.low}-{spec.high}")
    return value


def _check_part(part: str, spec: _Field) -> None:
    if spec.last and part == "L":
        return
    if spec.last and spec.name == "day-of-week" and part.endswith("L") and len(part) > 1:
        _number(part[:-1], spec)  # 6L: the last Friday of the month
        return
    if spec.weekday and part.endswith("W") and len(part) > 1:
        _number(part[:-1], spec)  # 3W: the weekday nearest the 3rd
        return
    if spec.nth and "#" in part:
        day, _, nth = part.partition("#")
        _number(day, spec)
        if nth not in {"1", "2", "3", "4", "5"}:
            raise CronSyntaxError(f"{part!r} in {spec.name}: the instance after # is 1-5")
        return
    body, slash, step = part.partition("/")
    if slash:
        if not spec.step:
            raise CronSyntaxError(f"{part!r}: / increments are not allowed in {spec.name}")
        if not (
            step.isascii()
            and step.isdigit()
            and len(step) <= _STEP_DIGITS
            and 0 < int(step) <= spec.high
        ):
            raise CronSyntaxError(
                f"{part!r} in {spec.name}: the increment after / is 1-{spec.high}"
            )
    if body == "*":
        return
    first, dash, last = body.partition("-")
    low = _number(first, spec)
    if dash:
        high = _number(last, spec)
        if low > high and spec.name not in ("day-of-week", "month"):
            raise CronSyntaxError(f"{part!r} in {spec.name}: the range runs backwards")


def check_cron(expression: str) -> None:
    """Raise `CronSyntaxError` unless `expression` is a six-field AWS `cron(...)`."""
    if len(expression) > MAX_LENGTH:
        raise CronSyntaxError(f"the expression is over {MAX_LENGTH} characters, AWS's limit")
    match = _CRON.fullmatch(expression.strip())
    if match is None:
        raise CronSyntaxError(
            f"write it as cron(minutes hours day-of-month month day-of-week year); {_EXAMPLE}"
        )
    fields = match.group("body").split()
    if len(fields) != len(_FIELDS):
        raise CronSyntaxError(
            f"AWS cron expressions have six fields (minutes hours day-of-month month "
            f"day-of-week year), this one has {len(fields)}; {_EXAMPLE}"
        )
    dom, dow = fields[2], fields[4]
    if (dom == "?") == (dow == "?"):
        raise CronSyntaxError(
            f"put ? in exactly one of day-of-month ({dom!r}) and day-of-week ({dow!r}); {_EXAMPLE}"
        )
    if dow.count("#") > 1 or ("#" in dow and "," in dow):
        raise CronSyntaxError(f"day-of-week {dow!r}: a # expression stands alone")
    for text, spec in zip(fields, _FIELDS, strict=True):
        if text == "?":
            if not spec.question:
                raise CronSyntaxError(
                    f"? is allowed in day-of-month or day-of-week, not in {spec.name}"
                )
            continue
        for part in text.split(","):
            if not part:
                raise CronSyntaxError(f"{spec.name} {text!r} has an empty list item")
            _check_part(part, spec)
