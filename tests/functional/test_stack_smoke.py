"""The test stack stands up a working Glance for each release.

Glance runs without the sizeaware filter here (flavor ``sizeawaretest``:
identity from X-* headers), so this tests the stack, not the filter.
Releases come from ``SIZEAWARE_GLANCE_RELEASES`` (default "33 30 29"); the
first run builds each release's venv (30-50 s each).
"""

import os
import pathlib
import sys
import time

import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from teststack.glance import Glance  # noqa: E402

RELEASES = os.environ.get('SIZEAWARE_GLANCE_RELEASES', '33 30 29').split()
MIB = 1024 * 1024
OCTETS = {'Content-Type': 'application/octet-stream'}


@pytest.fixture(scope='module', params=RELEASES)
def glance(request):
    stack = Glance(request.param, with_filter=False)
    try:
        stack.start()
    except Exception:
        stack.stop()
        raise
    yield stack
    stack.stop()


def _create(glance, headers, name='smoke'):
    resp = requests.post(glance.url + '/v2/images', headers=headers,
                         json={'name': name, 'disk_format': 'raw',
                               'container_format': 'bare'}, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()['id']


def _image(glance, image_id, headers):
    resp = requests.get(glance.url + '/v2/images/' + image_id,
                        headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait_active(glance, image_id, headers, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        image = _image(glance, image_id, headers)
        if image['status'] == 'active' or time.monotonic() > deadline:
            return image
        time.sleep(0.2)


def test_upload_with_content_length(glance):
    headers = glance.identity_headers('p1', roles=('member', 'reader'))
    image_id = _create(glance, headers)
    body = os.urandom(MIB)
    resp = requests.put(glance.url + '/v2/images/%s/file' % image_id,
                        data=body, headers=dict(headers, **OCTETS),
                        timeout=60)
    assert resp.status_code == 204, resp.text
    image = _image(glance, image_id, headers)
    assert image['status'] == 'active'
    assert image['size'] == MIB
    stored = glance.store_dirs['fs'] / image_id
    assert stored.read_bytes() == body

    # A second, non-admin project does not see the private image.
    other = glance.identity_headers('p2', 'u2', roles=('member', 'reader'))
    resp = requests.get(glance.url + '/v2/images/' + image_id,
                        headers=other, timeout=30)
    assert resp.status_code == 404
    resp = requests.get(glance.url + '/v2/images', headers=other, timeout=30)
    assert resp.status_code == 200
    assert image_id not in [i['id'] for i in resp.json()['images']]


def test_stage_and_glance_direct_import(glance):
    headers = glance.identity_headers('p1', roles=('member', 'reader'))
    image_id = _create(glance, headers, name='staged')
    body = os.urandom(MIB)
    resp = requests.put(glance.url + '/v2/images/%s/stage' % image_id,
                        data=body, headers=dict(headers, **OCTETS),
                        timeout=60)
    assert resp.status_code == 204, resp.text
    assert (glance.staging_dir / image_id).stat().st_size == MIB
    resp = requests.post(glance.url + '/v2/images/%s/import' % image_id,
                         json={'method': {'name': 'glance-direct'}},
                         headers=headers, timeout=30)
    assert resp.status_code == 202, resp.text
    image = _wait_active(glance, image_id, headers)
    assert image['status'] == 'active', image
    assert image['size'] == MIB
    assert (glance.store_dirs['fs'] / image_id).read_bytes() == body


def test_chunked_upload_with_large_chunks(glance):
    # python-glanceclient sends 1 MiB chunks: more than uwsgi's default
    # chunked-input-limit.
    headers = glance.identity_headers('p1', roles=('member', 'reader'))
    image_id = _create(glance, headers, name='chunked')
    chunks = [os.urandom(MIB), os.urandom(MIB // 2)]
    resp = requests.put(glance.url + '/v2/images/%s/file' % image_id,
                        data=iter(chunks), headers=dict(headers, **OCTETS),
                        timeout=60)
    assert resp.status_code == 204, resp.text
    image = _image(glance, image_id, headers)
    assert (image['status'], image['size']) == ('active', MIB + MIB // 2)
    stored = glance.store_dirs['fs'] / image_id
    assert stored.read_bytes() == b''.join(chunks)


def test_session_reuse(glance):
    # A client that keeps connections open must not see resets.
    headers = glance.identity_headers('p1', roles=('member', 'reader'))
    with requests.Session() as session:
        for _ in range(20):
            resp = session.get(glance.url + '/v2/images', headers=headers,
                               timeout=30)
            assert resp.status_code == 200
