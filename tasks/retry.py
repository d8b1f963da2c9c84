"""When to retry an HTTP request and how long to wait first, for the stages that talk to a
network (the crawl's fetches, the augment stage's LLM endpoint). Pure functions: the callers
sleep, or hold a host, for the seconds these return."""

import email.utils
from datetime import UTC, datetime


def retryable(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 429 (too many requests) or any 5xx.

    Args:
        status: The response's status code.

    Returns:
        True for 429 and 500 to 599 (and above).
    """
    return status == 429 or status >= 500


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date), or None.

    Args:
        value: The header's value, or None when there is none.
        now: The current time, for an HTTP date (a date in the past asks for 0 s).

    Returns:
        The seconds asked for, or None for a missing or unreadable value.
    """
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    attempt: int, base_s: float, asked_s: float | None = None, max_asked_s: float = float("inf")
) -> float:
    """The wait after failed attempt `attempt` (1 for the first): exponential back-off,
    lengthened to what the server asked for (Retry-After), which is capped.

    Args:
        attempt: The attempt that failed, counted from 1.
        base_s: The first back-off; it doubles with each attempt.
        asked_s: The seconds a Retry-After header asked for, if any.
        max_asked_s: The most that a Retry-After header can make the wait.

    Returns:
        max(base_s * 2 ** (attempt - 1), min(asked_s, max_asked_s)).
    """
    return max(base_s * 2 ** (attempt - 1), min(asked_s or 0.0, max_asked_s))
