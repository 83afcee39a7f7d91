"""Report periods: ISO weeks and explicit ranges, always UTC and half-open ``[start, end)``.

The default period is the last *full* ISO week before ``now`` (Monday 00:00 UTC to the next
Monday 00:00 UTC). A period's ``previous`` is the period of the same length that ends where
it starts, so week over week and "last 3 days vs the 3 days before" work the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from wasteaudit.exceptions import ConfigError

__all__ = ("Period", "parse_week", "parse_instant", "resolve_period", "week_label")

_WEEK = re.compile(r"^\s*(\d{4})-?[Ww](\d{1,2})\s*$")


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open UTC interval with a label (``2026-W47`` or ``2026-11-16..2026-11-23``)."""

    start: datetime
    end: datetime
    label: str

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def is_iso_week(self) -> bool:
        return _WEEK.match(self.label) is not None

    def previous(self) -> "Period":
        start = self.start - self.length
        if self.is_iso_week:
            return Period(start, self.start, week_label(start.date()))
        return Period(start, self.start, _range_label(start, self.start))

    def days(self) -> list[date]:
        """The UTC calendar days the period touches (for daily series)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def to_json(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end), "label": self.label}


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _range_label(start: datetime, end: datetime) -> str:
    def part(value: datetime) -> str:
        if value.time() == time(0):
            return value.date().isoformat()
        return _iso(value)

    return f"{part(start)}..{part(end)}"


def parse_week(text: str) -> Period:
    """``2026-W47`` (or ``2026W47``) → that ISO week, Monday 00:00 UTC to the next Monday."""
    match = _WEEK.match(text or "")
    if not match:
        raise ConfigError(f"not an ISO week: {text!r}; expected e.g. 2026-W47")
    year, week = int(match.group(1)), int(match.group(2))
    try:
        monday = date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ConfigError(f"{text!r}: {year} has no ISO week {week}") from None
    start = datetime.combine(monday, time(0), timezone.utc)
    return Period(start, start + timedelta(days=7), f"{year}-W{week:02d}")


def parse_instant(value: str | date | datetime) -> datetime:
    """A date (midnight UTC) or a datetime (naive = UTC) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(0), timezone.utc)
    text = str(value).strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), timezone.utc)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a date or time: {text!r}; expected e.g. 2026-11-16 or 2026-11-16T12:00:00Z") from None
    return parse_instant(parsed)


def resolve_period(
    *,
    week: str | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    now: datetime | None = None,
) -> Period:
    """The report period from the CLI/API options (see the module docstring for the default).

    ``since`` alone runs to ``now``; ``until`` alone covers the 7 days before it.
    """
    if week is not None and (since is not None or until is not None):
        raise ConfigError("give either a week or since/until, not both")
    if week is not None:
        return parse_week(week)
    current = parse_instant(now) if now is not None else datetime.now(timezone.utc)
    if since is None and until is None:
        this_monday = datetime.combine(current.date() - timedelta(days=current.weekday()), time(0), timezone.utc)
        start = this_monday - timedelta(days=7)
        return Period(start, this_monday, week_label(start.date()))
    end = parse_instant(until) if until is not None else current
    start = parse_instant(since) if since is not None else end - timedelta(days=7)
    if not start < end:
        raise ConfigError(f"empty period: since ({_iso(start)}) must be before until ({_iso(end)})")
    if start.weekday() == 0 and start.time() == time(0) and end - start == timedelta(days=7):
        return Period(start, end, week_label(start.date()))
    return Period(start, end, _range_label(start, end))
