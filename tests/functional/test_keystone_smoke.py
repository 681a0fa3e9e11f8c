"""The keystone half of the test stack: PostgreSQL and a real Keystone.

A member of an ordinary project gets a project-scoped token whose catalog
holds the ``image`` endpoint registered for Glance (Glance itself is not
started: its port is chosen first, as the stack does). Every server is
stopped by its own PID, pass or fail.
"""

import json
import pathlib
import sys
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from teststack import keystone as keystone_stack  # noqa: E402
from teststack import postgres  # noqa: E402
from teststack import process  # noqa: E402


@pytest.fixture(scope='module')
def keystone():
    pg = postgres.Postgres()
    ks = None
    try:
        pg.start()
        ks = keystone_stack.Keystone(pg.create_database('keystone'))
        ks.start()
        yield ks
    finally:
        if ks is not None:
            ks.stop()
        pg.stop()


def test_member_token_and_image_endpoint(keystone):
    glance_url = 'http://127.0.0.1:%d' % process.free_port()
    keystone.register_glance(glance_url)

    token, catalog = keystone.token_and_catalog('user1')
    assert token
    images = [s for s in catalog if s['type'] == 'image']
    assert len(images) == 1, catalog
    endpoints = {e['interface']: e['url'] for e in images[0]['endpoints']}
    assert endpoints == {'public': glance_url, 'internal': glance_url,
                         'admin': glance_url}

    # The token is valid and scoped to the member's own project.
    req = urllib.request.Request(
        keystone.auth_url + '/auth/tokens',
        headers={'X-Auth-Token': token, 'X-Subject-Token': token})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())['token']
    user = keystone.users['user1']
    assert body['project']['id'] == user['project_id']
    assert body['user']['id'] == user['user_id']
    assert {r['name'] for r in body['roles']} >= {'member', 'reader'}
    assert 'admin' not in {r['name'] for r in body['roles']}


def test_endpoint_moves_with_glance(keystone):
    glance_url = 'http://127.0.0.1:%d' % process.free_port()
    keystone.register_glance(glance_url)
    _, catalog = keystone.token_and_catalog('user2')
    urls = {e['url'] for s in catalog if s['type'] == 'image'
            for e in s['endpoints']}
    assert urls == {glance_url}


def test_glance_service_user(keystone):
    conf = keystone.glance_conf()['keystone_authtoken']
    assert conf['username'] == 'glance'
    token = keystone.token('glance')
    assert token
    assert keystone.users['glance']['project_id'] != \
        keystone.users['user1']['project_id']
