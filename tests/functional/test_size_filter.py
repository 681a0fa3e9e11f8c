"""The size filter's contract, against a real Glance under uwsgi.

Every case runs for ``/file`` and ``/stage``, with a Content-Length body and
with a chunked one, on each Glance release in the session. A rejected
upload must leave the image ``queued`` without size and no byte in the
store or the staging area; an accepted one must arrive whole.
"""

import os
import re

import pytest

from tests.functional import conftest

DATA = os.urandom(256 * 1024 + 7)
N = len(DATA)
TIB = 2 ** 40

# (case id, header value or None, expected status)
CASES = [
    ('exact', str(N), 204),
    ('blanks', ' %d\t' % N, 204),
    ('leading-zeros', '000%d' % N, 204),
    ('no-header', None, 204),
    ('one-over', str(N + 1), 400),
    ('one-under', str(N - 1), 400),
    ('plus-sign', '+%d' % N, 400),
    ('underscore', '%d_%d' % divmod(N, 1000), 400),
    ('negative', '-1', 400),
    ('26-digits', '9' * 26, 400),
    ('zero', '0', 400),
    ('comma', '%d,%d' % (N, N), 400),
    ('above-cap', str(2 * TIB), 413),
]


def stored_files(glance, image_id):
    """Every file of the image in the stores and the staging area."""
    found = []
    for directory in [*glance.store_dirs.values(), glance.staging_dir]:
        if directory.is_dir():
            found += [p for p in directory.rglob('*') if image_id in p.name]
    return found


def assert_untouched(api, glance, image_id):
    image = api.get_image(image_id)
    assert image['status'] == 'queued'
    assert image['size'] is None
    assert stored_files(glance, image_id) == []


def assert_stored(api, glance, image_id, target):
    image = api.get_image(image_id)
    if target == 'file':
        assert image['status'] == 'active'
        assert image['size'] == N
        (path,) = [p for p in stored_files(glance, image_id)
                   if glance.staging_dir not in p.parents]
    else:
        assert image['status'] == 'uploading'
        (path,) = stored_files(glance, image_id)
        assert glance.staging_dir in path.parents
    assert path.read_bytes() == DATA


@pytest.mark.parametrize('case, size, status', CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
@pytest.mark.parametrize('target', ['file', 'stage'])
def test_contract(api, glance, target, chunked, case, size, status):
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=size, target=target,
                      chunked=chunked)
    assert resp.status == status, resp
    if status == 204:
        assert_stored(api, glance, image_id, target)
        return
    assert_untouched(api, glance, image_id)
    if case == 'one-over':
        assert ('received %d bytes' % N in resp.text if chunked else
                'Content-Length %d does not match' % N in resp.text)
    elif case == 'one-under':
        assert ('received more than %d bytes' % (N - 1) in resp.text
                if chunked else 'does not match' in resp.text)
    elif status == 400 and not (case == 'zero' and not chunked):
        if case != 'zero':
            assert 'X-OpenStack-Image-Size' in resp.text
    # The client may retry with the right size.
    resp = api.upload(image_id, DATA, size=N, target=target, chunked=chunked)
    assert resp.status == 204, resp
    assert_stored(api, glance, image_id, target)


@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
def test_stage_then_import(api, glance, chunked):
    image_id = api.create_image()
    assert api.upload(image_id, DATA, size=N, target='stage',
                      chunked=chunked).status == 204
    resp = api.import_glance_direct(image_id)
    assert resp.status == 202, resp
    image = api.wait_for_status(image_id, ('active', 'killed'))
    assert image['status'] == 'active'
    assert image['size'] == N
    assert api.download(image_id).body == DATA


@pytest.mark.parametrize('target', ['file', 'stage'])
def test_content_range_on_plain_upload(api, glance, target):
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=N, target=target, headers={
        'Content-Range': 'bytes 0-%d/%d' % (N - 1, N)})
    assert resp.status == 400
    assert 'Content-Range' in resp.text
    assert_untouched(api, glance, image_id)


@pytest.mark.parametrize('size, status', [
    (str(2 * TIB), '413'), ('+5', '400'), (str(2 ** 30 + 1), '400')],
    ids=['above-cap', 'malformed', 'disagrees-with-length'])
@pytest.mark.parametrize('target', ['file', 'stage'])
def test_rejected_before_the_body_is_sent(api, glance, target, size, status):
    """A client that sends only the headers of a 1 GiB upload is answered."""
    image_id = api.create_image()
    status_line = api.send_headers_only(
        '/v2/images/%s/%s' % (image_id, target), {
            'Content-Type': 'application/octet-stream',
            'Content-Length': str(2 ** 30),
            'X-OpenStack-Image-Size': size})
    assert status_line.split()[1] == status, status_line
    assert_untouched(api, glance, image_id)


def test_one_log_line_with_the_request_id(api, glance):
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=N + 1, chunked=True)
    assert resp.status == 400
    request_id = resp.headers.get('x-openstack-request-id')
    assert request_id
    lines = [line for line in glance.log_path.read_text(
        errors='replace').splitlines() if 'Refused image upload' in line
        and image_id in line]
    assert len(lines) == 1, lines
    assert request_id in lines[0]
    assert re.search(r'declared=%d received=%d ' % (N + 1, N), lines[0])


def test_size_reaches_glance_for_chunked_upload(api, glance):
    """Glance records the size: a chunked body is handed on length-framed."""
    image_id = api.create_image()
    assert api.upload(image_id, DATA, size=N, chunked=True).status == 204
    image = api.get_image(image_id)
    assert image['size'] == N
    assert api.download(image_id).body == DATA


@pytest.mark.parametrize(
    'glance', [d for d in conftest.DEPLOYMENTS if d[1] == 'keystone'],
    ids=['glance%s-%s' % d for d in conftest.DEPLOYMENTS
         if d[1] == 'keystone'], indirect=True)
def test_other_project_cannot_upload(glance):
    """Behind keystone, the filter sits after authentication and policy
    still decides: a user of another project gets 404, not a size answer."""
    owner = conftest.client_for(glance, 'user1')
    other = conftest.client_for(glance, 'user2')
    image_id = owner.create_image()
    resp = other.upload(image_id, DATA, size=N + 1, chunked=True)
    assert resp.status == 404, resp
    resp = other.upload(image_id, DATA, size='+5')
    assert resp.status == 400, resp  # the header alone decides
    assert_untouched(owner, glance, image_id)
    assert owner.upload(image_id, DATA, size=N).status == 204
