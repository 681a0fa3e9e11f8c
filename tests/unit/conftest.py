import pytest

from tests.unit import fakes


@pytest.fixture
def glance_app():
    """Makes :class:`fakes.FakeGlance` apps and checks each in teardown."""
    apps = []

    def make(**kwargs):
        apps.append(fakes.FakeGlance(**kwargs))
        return apps[-1]

    yield make
    for app in apps:
        app.check()
