"""Real servers for the functional tests, started once per session.

``SIZEAWARE_GLANCE_RELEASES`` (default ``"33 30 29"``) lists the Glance
releases every Glance-backed test runs against. With
``SIZEAWARE_WITHOUT_FILTER=1`` the same Glance runs without the filter,
which shows what each test guards against (most of them then fail).
"""

import os
import uuid

import pytest

from teststack import glance as glance_stack
from tests.functional import client

RELEASES = os.environ.get('SIZEAWARE_GLANCE_RELEASES', '33 30 29').split()


@pytest.fixture(scope='session', params=RELEASES,
                ids=['glance%s' % r for r in RELEASES])
def glance(request):
    """A Glance of each release with sizeaware in every pipeline."""
    server = glance_stack.Glance(
        request.param,
        with_filter=os.environ.get('SIZEAWARE_WITHOUT_FILTER') != '1')
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(glance):
    """A client for a fresh project, so tests do not see each other."""
    return client.GlanceClient(glance.url, glance.identity_headers(
        project_id=uuid.uuid4().hex))


@pytest.fixture(scope='session')
def radosgw():
    """A one-node Ceph cluster with radosgw: a real S3 on 127.0.0.1."""
    from teststack import ceph
    server = ceph.RadosGW()
    server.start()
    yield server
    server.stop(remove=True)


@pytest.fixture(scope='session')
def s3(radosgw):
    import boto3
    return boto3.client('s3', endpoint_url=radosgw.endpoint,
                        aws_access_key_id=radosgw.access_key,
                        aws_secret_access_key=radosgw.secret_key,
                        region_name='us-east-1')
