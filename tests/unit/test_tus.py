"""tus 1.0 through the resumable filter, in front of the size filter and a
fake Glance."""

import base64
import email.utils
import hashlib
import os
import threading
import time

import pytest

from sizeaware.middleware import resumable
from sizeaware.sessions import locks
from sizeaware.sessions.protocols import tus
from sizeaware.sessions.storage import spool as spools
from tests.unit import fakes
from tests.unit.test_resumable import IMAGE
from tests.unit.test_resumable import images
from tests.unit.test_resumable import put_range
from tests.unit.test_resumable import request
from tests.unit.test_resumable import spooled
from tests.unit.test_resumable import stack
from tests.unit.test_resumable import uploads

DATA = os.urandom(96 * 1024 + 7)
N = len(DATA)
CREATE = '/v2/images/%s/file' % IMAGE
STAGE = '/v2/images/%s/stage' % IMAGE
HOST = 'http://localhost'
TUS = {'Tus-Resumable': '1.0.0'}
OCTETS = dict(TUS, **{'Content-Type': 'application/offset+octet-stream'})


def call(app, method, path, body=b'', headers=None, **kwargs):
    return fakes.serve(app, request(method, path, body, headers=dict(
        TUS, **(headers or {})), **kwargs))


def create(app, length=N, path=CREATE, headers=None, **kwargs):
    response = call(app, 'POST', path, headers=dict(
        {'Upload-Length': str(length)}, **(headers or {})), **kwargs)
    assert response.status_int == 201, response
    return response.headers['Location']


def url_path(location):
    assert location.startswith(HOST + '/')
    return location[len(HOST):]


def send(app, location, offset, data, headers=None, **kwargs):
    return call(app, 'PATCH', url_path(location), data, headers=dict(
        OCTETS, **{'Upload-Offset': str(offset)}, **(headers or {})),
        **kwargs)


def offset_of(app, location, **kwargs):
    response = call(app, 'HEAD', url_path(location), **kwargs)
    assert response.status_int == 200, response
    return int(response.headers['Upload-Offset'])


def checksum(name, data):
    return '%s %s' % (name, base64.b64encode(
        hashlib.new(name, data).digest()).decode())


@pytest.fixture
def glance(glance_app):
    return glance_app(images=images())


@pytest.fixture
def app(glance, tmp_path):
    return stack(glance, tmp_path)


def test_options_without_identity(app):
    req = request('OPTIONS', CREATE)
    del req.headers['X-Project-Id'], req.headers['X-User-Id']
    response = fakes.serve(app, req)
    assert response.status_int == 204
    assert response.headers['Tus-Version'] == '1.0.0'
    assert response.headers['Tus-Resumable'] == '1.0.0'
    assert response.headers['Tus-Extension'].split(',') == [
        'creation', 'creation-with-upload', 'expiration', 'checksum',
        'termination', 'concatenation']
    assert response.headers['Tus-Max-Size'] == str(1024 ** 4)
    assert set(response.headers['Tus-Checksum-Algorithm'].split(',')) == {
        'sha1', 'sha256', 'md5'}


def test_create_head_patch_in_chunks_finalizes(app, glance, tmp_path):
    response = call(app, 'POST', CREATE, headers={
        'Upload-Length': str(N), 'Upload-Metadata': 'filename aW1n,x'})
    assert response.status_int == 201
    assert response.headers['Tus-Resumable'] == '1.0.0'
    location = response.headers['Location']
    assert location.startswith(HOST + CREATE + '/tus/')
    assert len(location.rsplit('/', 1)[1]) == 32
    expires = email.utils.parsedate_to_datetime(
        response.headers['Upload-Expires'])
    assert response.headers['Upload-Expires'].endswith(' GMT')
    assert expires.timestamp() > time.time()
    head = call(app, 'HEAD', url_path(location))
    assert head.status_int == 200
    assert head.headers['Upload-Offset'] == '0'
    assert head.headers['Upload-Length'] == str(N)
    assert head.headers['Upload-Metadata'] == 'filename aW1n,x'
    assert head.headers['Cache-Control'] == 'no-store'
    assert head.headers['Tus-Resumable'] == '1.0.0'
    step = 40000
    for start in range(0, N, step):
        response = send(app, location, start, DATA[start:start + step])
        assert response.status_int == 204, response
        assert response.headers['Upload-Offset'] == str(
            min(N, start + step))
        assert 'Upload-Expires' in response.headers
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert upload.environ['PATH_INFO'] == CREATE
    assert upload.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == str(N)
    assert spooled(tmp_path) == []
    assert call(app, 'HEAD', url_path(location)).status_int == 404


def test_creation_with_upload(app, glance):
    response = call(app, 'POST', CREATE, DATA[:1000], headers=dict(
        OCTETS, **{'Upload-Length': str(N)}))
    assert response.status_int == 201
    assert response.headers['Upload-Offset'] == '1000'
    location = response.headers['Location']
    assert offset_of(app, location) == 1000
    # The whole image in the creation request: finalized there.
    glance.images = images()
    other = '/v2/images/%s/stage' % IMAGE
    response = call(app, 'POST', other, DATA, headers=dict(
        OCTETS, **{'Upload-Length': str(N)}))
    assert response.status_int == 201
    assert response.headers['Upload-Offset'] == str(N)
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert upload.environ['PATH_INFO'] == other


def test_creation_with_upload_of_another_media_type_is_415(app):
    response = call(app, 'POST', CREATE, DATA[:10], headers={
        'Upload-Length': str(N), 'Content-Type': 'application/json'})
    assert response.status_int == 415


def test_wrong_offset_409_media_type_415_beyond_length_413(app, tmp_path):
    location = create(app)
    assert send(app, location, 0, DATA[:100]).status_int == 204
    response = send(app, location, 50, DATA[50:150])
    assert response.status_int == 409
    assert response.headers['Tus-Resumable'] == '1.0.0'
    response = send(app, location, 100, DATA[100:200], headers={
        'Content-Type': 'application/octet-stream'})
    assert response.status_int == 415
    response = send(app, location, 100, DATA[100:] + b'x')
    assert response.status_int == 413
    response = call(app, 'PATCH', url_path(location), DATA[100:200],
                    headers={'Content-Type': tus.MEDIA_TYPE})
    assert response.status_int == 400  # no Upload-Offset
    assert offset_of(app, location) == 100


def test_chunked_body_past_the_length_is_413_and_keeps_nothing(app):
    location = create(app, length=100)
    req = request('PATCH', url_path(location), DATA[:150],
                  content_length=False, headers=dict(
                      OCTETS, **{'Upload-Offset': '0',
                                 'Transfer-Encoding': 'chunked'}))
    req.environ['wsgi.input_terminated'] = True
    assert fakes.serve(app, req).status_int == 413
    assert offset_of(app, location) == 0


def test_upload_length_above_max_is_413(glance, tmp_path):
    app = stack(glance, tmp_path, max_image_size=str(N - 1))
    response = call(app, 'POST', CREATE, headers={'Upload-Length': str(N)})
    assert response.status_int == 413
    assert spooled(tmp_path) == []
    options = fakes.serve(app, request('OPTIONS', CREATE))
    assert options.headers['Tus-Max-Size'] == str(N - 1)


@pytest.mark.parametrize('version', [None, '0.2.2', '1.0.0 '])
def test_unsupported_tus_resumable_is_412_with_tus_version(app, version):
    location = create(app)
    req = request('HEAD', url_path(location))
    if version is not None:
        req.headers['Tus-Resumable'] = version
    response = fakes.serve(app, req)
    if version == '1.0.0 ':
        assert response.status_int == 200
        return
    assert response.status_int == 412
    assert response.headers['Tus-Version'] == '1.0.0'
    assert response.headers['Tus-Resumable'] == '1.0.0'


@pytest.mark.parametrize('name', ['sha1', 'sha256', 'md5'])
def test_checksums(app, glance, name):
    location = create(app)
    good = send(app, location, 0, DATA[:500],
                headers={'Upload-Checksum': checksum(name, DATA[:500])})
    assert good.status_int == 204
    bad = send(app, location, 500, DATA[500:],
               headers={'Upload-Checksum': checksum(name, DATA[500:-1])})
    assert bad.status_int == 460
    assert bad.headers['Tus-Resumable'] == '1.0.0'
    assert offset_of(app, location) == 500
    assert send(app, location, 500, DATA[500:], headers={
        'Upload-Checksum': checksum(name, DATA[500:])}).status_int == 204
    assert uploads(glance)[0].body == DATA


@pytest.mark.parametrize('value', ['crc32 AAAAAA==', 'sha1', 'sha1 !!!',
                                   'sha1 AAAA'])
def test_bad_checksum_header_is_400(app, value):
    location = create(app)
    response = send(app, location, 0, DATA[:10],
                    headers={'Upload-Checksum': value})
    assert response.status_int == 400
    assert offset_of(app, location) == 0


def cut_source(chunks):
    source = fakes.ChunkSource(chunks,
                               fail_with=ConnectionResetError(104, 'reset'))

    class Input:
        def read(self, hint):
            return source(hint)
    return Input()


def test_a_cut_patch_keeps_every_byte_that_arrived(app, glance):
    location = create(app)
    response = send(app, location, 0, DATA, stream=cut_source(
        [DATA[:1000], DATA[1000:3000]]))
    assert response.status_int == 499
    assert offset_of(app, location) == 3000
    assert send(app, location, 3000, DATA[3000:]).status_int == 204
    assert uploads(glance)[0].body == DATA


def test_a_cut_patch_with_a_checksum_keeps_nothing(app):
    location = create(app)
    assert send(app, location, 0, DATA[:100]).status_int == 204
    response = send(app, location, 100, DATA[100:], stream=cut_source(
        [DATA[100:1000]]), headers={
            'Upload-Checksum': checksum('sha1', DATA[100:])})
    assert response.status_int == 499
    assert offset_of(app, location) == 100


def test_head_waits_for_a_patch_being_wound_up(app, tmp_path):
    location = create(app)
    send(app, location, 0, DATA[:100])
    (name,) = spooled(tmp_path)
    # A writer still holds the upload's bytes (a cut PATCH claiming what
    # arrived): HEAD answers once it has let go, with what it kept.
    fd = os.open(os.path.join(tmp_path, name, 'lock'), os.O_RDWR)
    locks.acquire(fd, 1 + 100, N - 100)
    answers = []
    head = threading.Thread(target=lambda: answers.append(
        offset_of(app, location)))
    head.start()
    time.sleep(0.3)
    assert answers == []
    os.close(fd)
    head.join(5)
    assert answers == [100]


def test_another_project_or_user_gets_404_and_harms_nothing(app):
    location = create(app)
    send(app, location, 0, DATA[:100])
    for project, user in (('p2', 'u1'), ('p1', 'u2')):
        for method in ('HEAD', 'DELETE'):
            assert call(app, method, url_path(location), project=project,
                        user=user).status_int == 404
        assert send(app, location, 100, DATA[100:200], project=project,
                    user=user).status_int == 404
    # A made-up upload id is no upload either.
    assert call(app, 'HEAD', CREATE + '/tus/' + 'ab' * 16).status_int == 404
    assert call(app, 'HEAD', CREATE + '/tus/nothex').status_int == 404
    assert offset_of(app, location) == 100


def test_delete_terminates(app, tmp_path):
    location = create(app)
    send(app, location, 0, DATA[:100])
    assert call(app, 'DELETE', url_path(location)).status_int == 204
    assert call(app, 'HEAD', url_path(location)).status_int == 404
    assert spooled(tmp_path) == []
    assert create(app)


def test_second_upload_to_the_same_target_is_409(app):
    create(app)
    response = call(app, 'POST', CREATE, headers={'Upload-Length': str(N)})
    assert response.status_int == 409
    assert create(app, path=STAGE)


def test_image_not_visible_404_not_queued_409(app, glance):
    response = call(app, 'POST', CREATE, headers={'Upload-Length': str(N)},
                    project='p2')
    assert response.status_int == 404
    glance.images[IMAGE]['status'] = 'active'
    response = call(app, 'POST', CREATE, headers={'Upload-Length': str(N)})
    assert response.status_int == 409


def test_post_without_tus_resumable_goes_to_glance(app, glance):
    response = fakes.serve(app, request('POST', CREATE, headers={
        'Upload-Length': '10'}))
    assert response.status == '204 Fake'


def test_concatenation(app, glance, tmp_path):
    cuts = [0, 30000, 30001, 70000, N]
    locations = []
    for start, end in zip(cuts, cuts[1:]):
        response = call(app, 'POST', CREATE, headers={
            'Upload-Length': str(end - start), 'Upload-Concat': 'partial'})
        assert response.status_int == 201
        locations.append((response.headers['Location'], start, end))
    # In parallel in any order; the last PATCH of each finalizes nothing.
    for location, start, end in reversed(locations):
        response = send(app, location, 0, DATA[start:end])
        assert response.status_int == 204
        assert response.headers['Upload-Offset'] == str(end - start)
        head = call(app, 'HEAD', url_path(location))
        assert head.headers['Upload-Concat'] == 'partial'
    assert uploads(glance) == []
    # Absolute URLs and paths alike.
    names = [url_path(loc) if i % 2 else loc
             for i, (loc, _, _) in enumerate(locations)]
    response = call(app, 'POST', CREATE, headers={
        'Upload-Concat': 'final;' + ' '.join(names),
        'Upload-Metadata': 'filename aW1n'})
    assert response.status_int == 201, response
    assert response.headers['Location'].startswith(HOST + CREATE + '/tus/')
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert upload.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == str(N)
    assert spooled(tmp_path) == []
    for location, _, _ in locations:
        assert call(app, 'HEAD', url_path(location)).status_int == 404


def test_final_upload_takes_no_patch_and_incomplete_partials_refused(
        glance_app, tmp_path):
    glance = glance_app(images=images(), status=500)
    app = stack(glance, tmp_path)
    first = create(app, length=10, headers={'Upload-Concat': 'partial'})
    second = create(app, length=N - 10, headers={'Upload-Concat': 'partial'})
    send(app, first, 0, DATA[:10])
    final = {'Upload-Concat': 'final;%s %s' % (first, second)}
    response = call(app, 'POST', CREATE, headers=final)
    assert response.status_int == 409
    assert 'not complete' in response.text
    send(app, second, 0, DATA[10:])
    response = call(app, 'POST', CREATE, headers=dict(
        final, **{'Upload-Length': str(N + 1)}))
    assert response.status_int == 400
    # Glance fails the upload, not for the data's sake: its answer, and
    # the final upload stays, every byte kept, refusing PATCH with 403.
    response = call(app, 'POST', CREATE, headers=final)
    assert response.status_int == 500
    (name,) = spooled(tmp_path)
    final_session = fakes.serve(app, request(
        'GET', CREATE + '/session')).json
    assert final_session['phase'] == 'paused_system'
    assert '500' in final_session['error']
    assert final_session['bytes_held'] == N
    with open(os.path.join(tmp_path, name, 'record.json')) as f:
        upload_id = __import__('json').load(f)['upload_id']
    location = HOST + CREATE + '/tus/' + upload_id
    response = send(app, location, 0, b'x')
    assert response.status_int == 403
    # Glance is back: the HEAD a resuming client sends finishes the image
    # with the bytes held, none sent again.
    glance.status = 204
    assert offset_of(app, location) == N
    assert uploads(glance)[-1].body == DATA
    assert spooled(tmp_path) == []


def test_final_names_only_own_partials_of_this_image(app):
    partial = create(app, length=10, headers={'Upload-Concat': 'partial'})
    send(app, partial, 0, DATA[:10])
    for value, status in [
            ('final;', 400),
            ('final;%s %s' % (partial, partial), 400),
            ('final;/v2/images/%s/file/tus/%s' % ('x' * 8, 'ab' * 16), 400),
            ('final;%s' % partial.replace('/file/', '/stage/'), 400),
            ('whole', 400)]:
        response = call(app, 'POST', CREATE,
                        headers={'Upload-Concat': value})
        assert response.status_int == status, value
    response = call(app, 'POST', CREATE, project='p2', headers={
        'Upload-Concat': 'final;' + partial})
    assert response.status_int == 404
    assert offset_of(app, partial) == 10


def test_head_finalizes_an_upload_whose_finalizer_died(app, glance,
                                                       tmp_path):
    location = create(app)
    assert send(app, location, 0, DATA[:N - 1]).status_int == 204
    # The request that completes the data dies before it finalizes: the
    # session moved to finalizing, then its locks went with its worker.
    session = app.storage.session(IMAGE, 'file', ('p1', 'u1'))
    with session.writer(N - 1, N - 1) as stream_class:
        writer = stream_class(lambda hint: DATA[N - 1:], 1, True)
        writer.read(1)
        assert session.commit(*writer.unclaimed()) == ([(0, N)], True)
    session.close()
    assert uploads(glance) == []
    # A client told the offset sends nothing more: the HEAD finalizes.
    assert offset_of(app, location) == N
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert spooled(tmp_path) == []


def test_methods_a_tus_url_does_not_answer_are_405(app):
    location = create(app)
    assert call(app, 'GET', url_path(location)).status_int == 405
    assert call(app, 'PUT', url_path(location)).status_int == 405


def test_creation_with_upload_and_a_checksum(app, tmp_path):
    response = call(app, 'POST', CREATE, DATA[:100], headers=dict(
        OCTETS, **{'Upload-Length': str(N),
                   'Upload-Checksum': checksum('sha256', DATA[:99])}))
    assert response.status_int == 460
    assert 'Location' not in response.headers
    # Nothing of it is left: the image takes a new creation.
    assert spooled(tmp_path) == []
    response = call(app, 'POST', CREATE, DATA[:100], headers=dict(
        OCTETS, **{'Upload-Length': str(N),
                   'Upload-Checksum': checksum('sha256', DATA[:100])}))
    assert response.status_int == 201
    assert offset_of(app, response.headers['Location']) == 100


def test_head_reports_expiry_and_every_request_extends_it(glance, tmp_path):
    now = [1_000_000.0]
    app = stack(glance, tmp_path, session_inactivity_timeout='3600')
    app.storage.clock = lambda: now[0]
    location = create(app)
    head = call(app, 'HEAD', url_path(location))
    assert head.headers['Upload-Expires'] == email.utils.formatdate(
        now[0] + 3600, usegmt=True)
    now[0] += 600
    response = send(app, location, 0, DATA[:10])
    assert response.headers['Upload-Expires'] == (
        'Mon, 12 Jan 1970 14:56:40 GMT')
    now[0] += 3601
    assert call(app, 'HEAD', url_path(location)).status_int == 404


def test_creation_with_upload_cut_keeps_nothing(app, glance, tmp_path):
    response = call(app, 'POST', CREATE, DATA, stream=cut_source(
        [DATA[:1000]]), headers=dict(OCTETS, **{'Upload-Length': str(N)}))
    assert response.status_int == 499
    assert spooled(tmp_path) == []
    assert create(app)


def test_final_upload_takes_its_partials_room_in_the_spool(glance, tmp_path):
    app = stack(glance, tmp_path, spool_max_bytes=str(N),
                max_sessions_per_project='2')
    first = create(app, length=10, headers={'Upload-Concat': 'partial'})
    second = create(app, length=N - 10, headers={'Upload-Concat': 'partial'})
    assert call(app, 'POST', STAGE, headers={
        'Upload-Length': '1'}).status_int == 429
    send(app, first, 0, DATA[:10])
    send(app, second, 0, DATA[10:])
    response = call(app, 'POST', CREATE, headers={
        'Upload-Concat': 'final;%s %s' % (first, second)})
    assert response.status_int == 201
    assert uploads(glance)[0].body == DATA


def test_discovery_answers_options_before_authentication(glance):
    def authtoken(environ, start_response):
        start_response('401 Unauthorized', [('Content-Type', 'text/plain')])
        return [b'no token']
    discovery = resumable.TusDiscovery.factory({}, max_image_size='1000')(
        authtoken)
    for path in (CREATE, STAGE, CREATE + '/tus/' + '0' * 32):
        req = request('OPTIONS', path)
        del req.headers['X-Project-Id'], req.headers['X-User-Id']
        response = fakes.serve(discovery, req)
        assert response.status_int == 204
        assert response.headers['Tus-Version'] == '1.0.0'
        assert response.headers['Tus-Max-Size'] == '1000'
    # Everything else is authtoken's to answer.
    for method, path in (('POST', CREATE), ('OPTIONS', '/v2/images'),
                         ('PATCH', CREATE + '/tus/' + '0' * 32)):
        assert fakes.serve(discovery, request(method, path)
                           ).status_int == 401


def test_an_empty_upload_makes_an_empty_image_at_once(app, glance):
    response = call(app, 'POST', CREATE, headers={'Upload-Length': '0'})
    assert response.status_int == 201
    (upload,) = uploads(glance)
    assert upload.body == b''
    assert upload.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == '0'
    assert call(app, 'HEAD', url_path(
        response.headers['Location'])).status_int == 404


def test_the_offset_is_what_is_held_from_0_also_after_ranged_puts(app):
    location = create(app)
    response = put_range(app, 30, 59, data=DATA)
    assert response.status_int == 204
    response = send(app, location, 0, DATA[:30])
    assert response.status_int == 204
    assert response.headers['Upload-Offset'] == '60'
    assert offset_of(app, location) == 60


def test_a_partial_cancelled_while_the_final_joins_it(app, tmp_path,
                                                     monkeypatch):
    """The final upload's creation checked its partials, then one of them
    went (cancelled by another request): 409, and no final upload is left
    to stand in the way of the next creation."""
    first = create(app, length=10, headers={'Upload-Concat': 'partial'})
    second = create(app, length=N - 10, headers={'Upload-Concat': 'partial'})
    send(app, first, 0, DATA[:10])
    send(app, second, 0, DATA[10:])
    join = spools.SpoolSession.join

    def join_after_a_cancel(self, partials):
        # Another request cancels a partial at the worst moment.
        assert call(app, 'DELETE', url_path(second)).status_int == 204
        return join(self, partials)
    monkeypatch.setattr(spools.SpoolSession, 'join', join_after_a_cancel)
    response = call(app, 'POST', CREATE, headers={
        'Upload-Concat': 'final;%s %s' % (first, second)})
    monkeypatch.undo()
    assert response.status_int == 409, response.text
    assert 'cancelled' in response.text
    assert '%s.file' % IMAGE not in spooled(tmp_path)
    # The image takes a new upload at once.
    create(app)


def test_an_empty_image_refused_ends_at_once(glance_app, tmp_path):
    glance = glance_app(images=images(disk_format='qcow2'))
    app = stack(glance, tmp_path)
    response = call(app, 'POST', CREATE, headers={'Upload-Length': '0'})
    assert response.status_int == 400
    status = fakes.serve(app, request('GET', CREATE + '/session')).json
    assert status['phase'] == 'finished_failure'
    # The image takes a new upload at once.
    create(app, length=10)


def test_a_chunked_patch_past_the_end_is_413(app):
    location = create(app, length=10, headers={'Upload-Concat': 'partial'})
    assert send(app, location, 0, DATA[:10]).status_int == 204
    req = request('PATCH', url_path(location), b'x', content_length=False,
                  headers=dict(OCTETS, **{'Upload-Offset': '10',
                                          'Transfer-Encoding': 'chunked'}))
    req.environ['wsgi.input_terminated'] = True
    # At its end already, a chunked PATCH with a body goes past it.
    response = fakes.serve(app, req)
    assert response.status_int == 413
    assert offset_of(app, location) == 10
