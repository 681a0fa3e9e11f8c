import boto3
from botocore import stub
import pytest

from tests.unit import fakes


@pytest.fixture
def s3_client():
    """A real botocore S3 client whose endpoint answers nothing: every
    request is to be answered by :func:`s3_stubber`."""
    return boto3.client('s3', endpoint_url='http://127.0.0.1:9',
                        region_name='us-east-1', aws_access_key_id='access',
                        aws_secret_access_key='secret')


@pytest.fixture
def s3_stubber(s3_client):
    """botocore's ``Stubber`` on :func:`s3_client`, active."""
    with stub.Stubber(s3_client) as stubber:
        yield stubber


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
