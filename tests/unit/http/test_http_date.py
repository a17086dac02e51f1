"""The `date` header's IMF-fixdate (pyproxy/http/connection.py `http_date`), against the standard library's
email.utils.formatdate(usegmt=True) over every weekday and month, leap days and the ends of days and years."""
from __future__ import annotations

import calendar
from email.utils import formatdate

import pytest

from pyproxy.http.connection import http_date

SAMPLES = [0, 784111777,  # RFC 9110's example: Sun, 06 Nov 1994 08:49:37 GMT
           calendar.timegm((2024, 2, 29, 23, 59, 59)), calendar.timegm((1999, 12, 31, 23, 59, 59)),
           calendar.timegm((2000, 1, 1, 0, 0, 0)), calendar.timegm((2026, 12, 5, 3, 8, 14))]
SAMPLES += [calendar.timegm((2026, month, day, 12, 0, 7)) for month in range(1, 13) for day in (1, 7, 28)]


@pytest.mark.parametrize("seconds", SAMPLES)
def test_http_date_is_imf_fixdate_as_the_standard_library_writes_it(seconds):
    assert http_date(seconds) == formatdate(seconds, usegmt=True)


def test_the_rfc_example():
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
