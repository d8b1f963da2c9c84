"""The retry timing both network stages use: Retry-After, back-off, which statuses to retry."""

import datetime as dt

import pytest

from tasks.retry import backoff_delay, retry_after, retryable

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), (" 7 ", 7.0), ("Mon, 01 Jan 2024 00:00:30 GMT", 30.0),
     ("Sun, 31 Dec 2023 00:00:00 GMT", 0.0), ("soon", None), ("-5", None), ("", None),
     (None, None)],
)  # fmt: skip
def test_retry_after(value, seconds):
    assert retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    ("attempt", "asked", "cap", "seconds"),
    [(1, None, 30.0, 0.5), (3, None, 30.0, 2.0), (1, 4.0, 30.0, 4.0), (3, 1.0, 30.0, 2.0),
     (1, 600.0, 30.0, 30.0), (4, 600.0, 1.0, 4.0)],
)  # fmt: skip
def test_backoff_doubles_and_a_capped_retry_after_lengthens_it(attempt, asked, cap, seconds):
    assert backoff_delay(attempt, 0.5, asked, cap) == seconds


def test_only_429_and_5xx_are_retried():
    assert [s for s in (200, 301, 400, 404, 429, 500, 503, 599) if retryable(s)] == [
        429, 500, 503, 599]  # fmt: skip
