"""Timestamps as the API writes them: RFC 3339, always with a zone."""

import datetime

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from lxdtx import timeutil


class TimeTests(SynchronousTestCase):
    """Every timestamp carries a zone, and what the Go clients write parses back."""

    def test_now_has_zone(self):
        """`now` is UTC with an explicit offset."""
        value = timeutil.now()
        self.assertTrue(value.endswith("+00:00"), value)
        self.assertEqual(timeutil.parse(value).utcoffset(), datetime.timedelta(0))

    def test_from_timestamp(self):
        """POSIX seconds become a zoned string."""
        self.assertEqual(timeutil.from_timestamp(0), "1970-01-01T00:00:00+00:00")

    def test_parse_go_forms(self):
        """`Z`, offsets and nanoseconds, as Go writes them."""
        self.assertEqual(timeutil.parse("2018-06-13T12:03:23.123456789+02:00"),
                         datetime.datetime(2018, 6, 13, 12, 3, 23, 123456,
                                           datetime.timezone(datetime.timedelta(hours=2))))
        self.assertEqual(timeutil.parse(timeutil.ZERO_TIME).year, 1)
        self.assertEqual(timeutil.parse("2018-06-13T12:03:23.5Z").microsecond, 500000)

    @given(st.datetimes(timezones=st.just(datetime.timezone.utc)))
    def test_round_trip(self, moment):
        """Any zoned moment survives formatting (Go's `Z` form too) and parsing."""
        self.assertEqual(timeutil.parse(moment.isoformat()), moment)
        self.assertEqual(timeutil.parse(moment.isoformat().replace("+00:00", "Z")), moment)
