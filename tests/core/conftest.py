"""The core's behaviour tests run once per driver (see tests/asyncio/drivers.py)."""

from tests.asyncio.drivers import ALL_KINDS, drivers_fixture

drivers = drivers_fixture(ALL_KINDS)
