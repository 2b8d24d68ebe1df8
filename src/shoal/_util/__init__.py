"""Small helpers with no shoal dependencies: clocks, back-off, asyncio glue."""

from shoal._util.backoff import Backoff
from shoal._util.clock import Clock, FakeClock, SystemClock, format_time, parse_time

__all__ = ["Backoff", "Clock", "FakeClock", "SystemClock", "format_time", "parse_time"]
