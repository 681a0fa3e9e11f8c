"""The size filter's contract, against a real Glance under uwsgi.

Every case runs for ``/file`` and ``/stage``, with a Content-Length body and
with a chunked one, on each Glance release in the session. A rejected
upload must leave the image ``queued`` without size and no byte in the
store or the staging area; an accepted one must arrive whole.
"""

import os
import re
import time

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


# What each refusal says: (case, chunked) -> a part of the body.
TEXTS = {
    ('one-over', True): 'declared %d bytes, received %d bytes' % (N + 1, N),
    ('one-over', False): 'Content-Length %d does not match' % N,
    ('one-under', True): 'received more than %d bytes' % (N - 1),
    ('one-under', False): 'Content-Length %d does not match' % N,
    ('zero', True): 'received more than 0 bytes',
    ('zero', False): 'Content-Length %d does not match' % N,
    ('above-cap', True): 'exceeds the maximum',
    ('above-cap', False): 'exceeds the maximum',
}
for _case, _size, _status in CASES:
    for _chunked in (True, False):
        TEXTS.setdefault((_case, _chunked), 'X-OpenStack-Image-Size')


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
    resp = _upload_case(api, image_id, size, target, chunked)
    assert resp.status == status, resp
    if status == 204:
        assert_stored(api, glance, image_id, target)
        return
    assert_untouched(api, glance, image_id)
    assert TEXTS[case, chunked] in resp.text
    # The client may retry with the right size.
    resp = api.upload(image_id, DATA, size=N, target=target, chunked=chunked)
    assert resp.status == 204, resp
    assert_stored(api, glance, image_id, target)


def _upload_case(api, image_id, size, target, chunked):
    """The upload of a case. A value with leading blanks goes out on a
    raw socket: requests refuses to send it, and the filter must take it
    as servers hand it on."""
    if size is None or size == size.lstrip():
        return api.upload(image_id, DATA, size=size, target=target,
                          chunked=chunked)
    headers = {'Content-Type': 'application/octet-stream',
               'X-OpenStack-Image-Size': size}
    if chunked:
        headers['Transfer-Encoding'] = 'chunked'
        body = _chunked(DATA) + b'0\r\n\r\n'
    else:
        headers['Content-Length'] = str(N)
        body = DATA
    return api.send_raw('PUT', '/v2/images/%s/%s' % (image_id, target),
                        headers, body)


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


def _chunked(data, piece=65536):
    return b''.join(b'%x\r\n%s\r\n' % (len(data[i:i + piece]),
                                       data[i:i + piece])
                    for i in range(0, len(data), piece))


def _partial_upload(api, image_id, target, chunked, then):
    headers = {'Content-Type': 'application/octet-stream',
               'X-OpenStack-Image-Size': str(N)}
    half = DATA[:N // 2]
    if chunked:
        headers['Transfer-Encoding'] = 'chunked'
        body = _chunked(half)
    else:
        headers['Content-Length'] = str(N)
        body = half
    return api.send_partial('/v2/images/%s/%s' % (image_id, target),
                            headers, body, then=then,
                            timeout=conftest.STALL_TIMEOUT + 30)


@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
@pytest.mark.parametrize('target', ['file', 'stage'])
def test_client_going_quiet_mid_body_gets_408(api, glance, target, chunked):
    """A client that stops sending is answered once the server gives up on
    it, and the image is left as it was (408 also under uwsgi, whose
    chunked reader cannot tell a stall from a disconnect)."""
    image_id = api.create_image()
    status_line = _partial_upload(api, image_id, target, chunked, 'wait')
    assert status_line.split()[1] == '408', status_line
    assert_untouched(api, glance, image_id)


@pytest.mark.parametrize('chunked', [False, True], ids=['length', 'chunked'])
@pytest.mark.parametrize('target', ['file', 'stage'])
def test_client_going_away_mid_body_leaves_nothing(api, glance, target,
                                                   chunked):
    image_id = api.create_image()
    _partial_upload(api, image_id, target, chunked, 'close')
    # Nobody is left to answer: the log says what the server made of it
    # (under uwsgi a chunked body's end cannot be told from a stall).
    line = _refusal_line(glance, image_id)
    expected = ('408' if chunked and glance.wsgi_server == 'uwsgi'
                else '499')
    assert 'status=%s' % expected in line, line
    api.wait_for_status(image_id, ('queued',))
    assert_untouched(api, glance, image_id)


def _refusal_line(glance, image_id, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in glance.log_path.read_text(
            errors='replace').splitlines() if 'Refused image upload' in line
            and image_id in line]
        if lines or time.monotonic() > deadline:
            assert len(lines) == 1, lines
            return lines[0]
        time.sleep(0.2)


@pytest.fixture(scope='module')
def glance_filter_first():
    """Glance 33 with the filter placed first in every pipeline: before
    versionnegotiation (so it sees /v2.1/ paths) and before context (so it
    names its refusals itself)."""
    from teststack import glance as glance_stack
    from teststack import venvs
    shipped = glance_stack.shipped_paste_ini(venvs.glance_venv('33'))
    text = glance_stack.build_paste_ini(shipped.read_text())
    text = '\n'.join(
        line if not line.startswith(('default =', 'sizeawaretest =')) else
        '%s= sizeaware %s' % (line.split('=')[0],
                              line.split('=', 1)[1].replace(' sizeaware', ''))
        for line in text.splitlines()) + '\n'
    server = glance_stack.Glance('33', paste_ini=text)
    server.start()
    yield server
    server.stop()


def test_filter_placed_first_sees_minor_version_paths(glance_filter_first):
    glance = glance_filter_first
    pipelines = [line for line in glance.paste_path.read_text().splitlines()
                 if line.startswith('sizeawaretest =')]
    assert pipelines[0].split('=', 1)[1].split()[0] == 'sizeaware'
    api = conftest.client_for(glance)
    image_id = api.create_image()
    resp = api.upload(image_id, DATA, size=N + 1, chunked=True,
                      version='v2.1')
    assert resp.status == 400, (resp, resp.headers)
    request_id = resp.headers.get('x-openstack-request-id')
    assert request_id, (resp, resp.headers)
    assert request_id in _refusal_line(glance, image_id)
    assert_untouched(api, glance, image_id)
    resp = api.upload(image_id, DATA, size=N, chunked=True, version='v2.1')
    assert resp.status == 204, resp
    assert_stored(api, glance, image_id, 'file')
