"""The resumable filter, in front of the size filter and a fake Glance."""

import hashlib
import io
import logging
import os
import struct
import tempfile

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest
import webob

from sizeaware.middleware import resumable
from sizeaware.middleware import size_filter
from tests.unit import fakes

IMAGE = '6f1c2a77-0000-4000-8000-000000000001'
DATA = os.urandom(64 * 1024 + 5)
N = len(DATA)
PATH = '/v2/images/%s/file' % IMAGE
SESSION = PATH + '/session'


def stack(app, spool_dir, **local_conf):
    """Filters as paste.deploy builds them: resumable, sizeaware, app."""
    local_conf.setdefault('spool_dir', str(spool_dir))
    return resumable.ResumableFilter.factory({}, **local_conf)(
        size_filter.SizeFilter.factory({})(app))


def images(status='queued', disk_format='raw', owner='p1', **extra):
    return {IMAGE: dict(status=status, disk_format=disk_format, owner=owner,
                        **extra)}


def request(method, path, body=b'', project='p1', user='u1', headers=None,
            stream=None, content_length=True):
    req = webob.Request.blank(path, method=method)
    req.headers['X-Project-Id'] = project
    req.headers['X-User-Id'] = user
    req.environ['wsgi.input'] = stream or io.BytesIO(body)
    if content_length:
        req.environ['CONTENT_LENGTH'] = str(len(body))
    else:
        req.environ.pop('CONTENT_LENGTH', None)
    for name, value in (headers or {}).items():
        req.headers[name] = value
    return req


def put_range(app, first, last, data=DATA, size=None, **kwargs):
    headers = kwargs.pop('headers', {})
    headers['Content-Range'] = 'bytes %d-%d/%d' % (
        first, last, len(data) if size is None else size)
    return fakes.serve(app, request('PUT', PATH, data[first:last + 1],
                                    headers=headers, **kwargs))


def uploads(glance):
    return [c for c in glance.calls if c.environ['REQUEST_METHOD'] == 'PUT']


def refused_in_flight(glance, size):
    """Whether every upload Glance saw was refused before its last byte:
    finalize judges the image as Glance reads it, so a refused image
    reaches Glance, but never whole."""
    return all(call.error is not None and len(call.body) < size
               for call in uploads(glance))


def spooled(spool_dir):
    """The sessions in the spool that still hold data (one that ended
    keeps its record alone, for its status document)."""
    return [n for n in os.listdir(spool_dir) if not n.startswith('.')
            and {'data', 'part.0'} & set(os.listdir(os.path.join(spool_dir,
                                                                   n)))]


def quarters(data=DATA):
    q = len(data) // 4
    return [(0, q - 1), (q, 2 * q - 1), (2 * q, 3 * q - 1),
            (3 * q, len(data) - 1)]


def test_quarters_out_of_order_become_one_upload(glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    parts = quarters()
    for index in (1, 3, 0):
        response = put_range(app, *parts[index])
        assert response.status_int == 204
        assert uploads(glance) == []
    assert response.headers['Range'] == 'bytes=0-%d,%d-%d' % (
        parts[1][1], parts[3][0], N - 1)
    response = put_range(app, *parts[2])
    assert response.status_int == 204
    assert response.status == '204 Fake'  # Glance's own answer
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert upload.environ['CONTENT_LENGTH'] == str(N)
    assert upload.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == str(N)
    assert upload.environ['sizeaware.expected_size'] == N
    assert 'HTTP_CONTENT_RANGE' not in upload.environ
    assert upload.environ['HTTP_X_PROJECT_ID'] == 'p1'
    assert spooled(tmp_path) == []
    # The owner still reads how it ended.
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'finished_success'
    assert [phase for phase, _ in status['phases']] == [
        'transferring', 'finalizing', 'finished_success']
    assert status['pieces'] == [] and status['expires_at'] is None
    assert fakes.serve(app, request('GET', SESSION,
                                    project='p2')).status_int == 404


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_any_order_split_and_overlap_finalizes_the_image(data):
    image = data.draw(st.binary(min_size=1, max_size=3000))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(image)),
                                    max_size=8)) | {len(image)})
    pieces, start = [], 0
    for cut in cuts:
        pieces.append((start, cut - 1))
        start = cut
    # Some pieces reach back over their neighbours' bytes.
    pieces = [(max(0, a - data.draw(st.integers(0, 50))), b)
              for a, b in pieces]
    order = data.draw(st.permutations(pieces))
    glance = fakes.FakeGlance(images=images())
    with tempfile.TemporaryDirectory() as spool_dir:
        app = stack(glance, spool_dir)
        for first, last in order:
            response = put_range(app, first, last, data=image)
            assert response.status_int == 204
            if uploads(glance):
                # Complete (overlaps may cover it before the last piece).
                break
        (upload,) = uploads(glance)
        assert upload.body == image
        assert spooled(spool_dir) == []
    glance.check()


def test_parallel_style_interleaved_sessions_of_two_targets(glance_app,
                                                            tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    stage = '/v2/images/%s/stage' % IMAGE
    response = fakes.serve(app, request(
        'PUT', stage, DATA[:10], headers={'Content-Range': 'bytes 0-9/%d'
                                          % N}))
    assert response.status_int == 204
    assert put_range(app, 0, N - 1).status_int == 204
    (upload,) = uploads(glance)
    assert upload.environ['PATH_INFO'] == PATH
    status = fakes.serve(app, request('GET', stage + '/session'))
    assert status.json['bytes_held'] == 10
    assert status.json['target'] == 'stage'


def test_overlap_with_different_bytes_is_409_and_keeps_what_was_held(
        glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    put_range(app, 0, 99)
    other = bytearray(DATA)
    other[99] ^= 0xFF
    response = put_range(app, 50, 199, data=bytes(other))
    assert response.status_int == 409
    assert 'differ' in response.text
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['ranges_held'] == [[0, 99]]


@pytest.mark.parametrize('header, status', [
    ('bytes 0-%d/%d' % (N, N), 416),
    ('bytes 10-9/%d' % N, 416),
    ('bytes 0-9/+%d' % N, 400),
    ('bytes=0-9/%d' % N, 400),
    ('bytes */%d' % N, 400),
])
def test_bad_content_range(glance_app, tmp_path, header, status):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    response = fakes.serve(app, request('PUT', PATH, DATA[:10], headers={
        'Content-Range': header}))
    assert response.status_int == status
    if status == 416:
        assert response.headers['Content-Range'] == 'bytes */%d' % N
    assert glance.calls == []


def test_body_length_differing_from_the_range_is_400(glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    response = fakes.serve(app, request('PUT', PATH, DATA[:11], headers={
        'Content-Range': 'bytes 0-9/%d' % N}))
    assert response.status_int == 400
    assert 'Content-Length 11 does not match' in response.text


def test_chunked_body_shorter_than_the_range_keeps_nothing(glance_app,
                                                           tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    req = request('PUT', PATH, DATA[:5], content_length=False, headers={
        'Content-Range': 'bytes 0-9/%d' % N, 'Transfer-Encoding': 'chunked'})
    req.environ['wsgi.input_terminated'] = True
    response = fakes.serve(app, req)
    assert response.status_int == 400
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['bytes_held'] == 0


def test_a_cut_connection_keeps_every_byte_that_arrived(glance_app,
                                                        tmp_path, caplog):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    source = fakes.ChunkSource([DATA[100:1100], DATA[1100:1300]],
                               fail_with=ConnectionResetError(104, 'reset'))

    class Input:
        def read(self, hint):
            return source(hint)

    req = request('PUT', PATH, DATA[100:5000], stream=Input(), headers={
        'Content-Range': 'bytes 100-4999/%d' % N})
    req.environ['openstack.request_id'] = 'req-cut'
    with caplog.at_level(logging.INFO):
        response = fakes.serve(app, req)
    assert response.status_int == 499
    (line,) = [r.getMessage() for r in caplog.records
               if r.name == resumable.__name__]
    assert 'request_id=req-cut' in line and 'status=499' in line
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['ranges_held'] == [[100, 1299]]
    assert status['phase'] == 'paused_system'
    # The client sends what is missing, overlapping what arrived.
    assert put_range(app, 1000, N - 1).status_int == 204
    assert put_range(app, 0, 99).status_int == 204
    (upload,) = uploads(glance)
    assert upload.body == DATA


def test_status_is_the_owners_only(glance_app, tmp_path):
    glance = glance_app(images=images(owner=None))
    app = stack(glance, tmp_path)
    put_range(app, 0, 9, headers={'X-Image-Sha256': 'ab' * 32})
    response = fakes.serve(app, request('GET', SESSION))
    assert response.status_int == 200
    assert response.headers['Cache-Control'] == 'no-store'
    document = response.json
    assert document['phase'] == 'paused_system'
    assert document['size'] == N
    assert document['bytes_held'] == 10
    assert document['image_id'] == IMAGE
    assert document['sha256'] == 'ab' * 32
    assert document['error'] is None
    assert document['expires_at'] > document['created_at']
    for project, user in (('p2', 'u1'), ('p1', 'u2')):
        for method in ('GET', 'DELETE'):
            response = fakes.serve(app, request(method, SESSION,
                                                project=project, user=user))
            assert response.status_int == 404
        # The image is visible to them, but the upload is not theirs: to
        # them it does not exist, whatever bytes they send.
        assert put_range(app, 10, 19, project=project,
                         user=user).status_int == 404
        assert put_range(app, 0, N - 1, project=project,
                         user=user).status_int == 404
    assert fakes.serve(app, request('GET', SESSION)).json[
        'bytes_held'] == 10
    assert uploads(glance) == []


def test_delete_cancels_and_removes_the_spool(glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    put_range(app, 0, 9)
    assert spooled(tmp_path)
    assert fakes.serve(app, request('DELETE', SESSION)).status_int == 204
    assert spooled(tmp_path) == []
    assert fakes.serve(app, request('GET', SESSION)).json['phase'] == (
        'cancelled_user')
    assert fakes.serve(app, request('DELETE', SESSION)).status_int == 404
    assert fakes.serve(app, request('PATCH', SESSION)).status_int == 405
    # A new upload of the image starts a new session.
    assert put_range(app, 0, 9).status_int == 204
    assert fakes.serve(app, request('GET', SESSION)).json['phase'] == (
        'paused_system')


def test_image_not_visible_is_404_and_not_queued_is_409(glance_app,
                                                        tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    assert put_range(app, 0, 9, project='p2').status_int == 404
    glance.images[IMAGE]['status'] = 'active'
    response = put_range(app, 0, 9)
    assert response.status_int == 409
    assert 'active' in response.text
    assert spooled(tmp_path) == []


def test_declared_sha256_mismatch_refused_before_the_last_byte(
        glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    wrong = hashlib.sha256(b'other').hexdigest()
    put_range(app, 0, 99, headers={'X-Image-Sha256': wrong})
    response = put_range(app, 100, N - 1)
    assert response.status_int == 400
    assert 'sha256' in response.text
    assert refused_in_flight(glance, N)
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'finished_failure'
    assert 'sha256' in status['error']
    assert status['bytes_held'] == 0
    # The image is still queued: a new range starts a new session.
    assert put_range(app, 0, 9).status_int == 204
    assert fakes.serve(app, request('DELETE', SESSION)).status_int == 204
    right = hashlib.sha256(DATA).hexdigest()
    put_range(app, 0, N - 1, headers={'X-Image-Sha256': right})
    assert uploads(glance)[-1].body == DATA


def qcow2(backing=False):
    header = struct.pack('>4sIQIIQ', b'QFI\xfb', 3, 0x200 if backing else 0,
                         8 if backing else 0, 16, 1 << 20)
    return header + bytes(4096 - len(header))


@pytest.mark.parametrize('data, disk_format, reason', [
    (qcow2(backing=True), 'qcow2', 'backing file'),
    (qcow2(), 'raw', 'format qcow2'),
    (bytes(4096), 'qcow2', 'format raw'),
])
def test_refused_formats(glance_app, tmp_path, data, disk_format, reason):
    glance = glance_app(images=images(disk_format=disk_format))
    app = stack(glance, tmp_path)
    response = put_range(app, 0, len(data) - 1, data=data)
    assert response.status_int == 400
    assert reason in response.text
    assert refused_in_flight(glance, len(data))
    assert glance.images[IMAGE]['status'] == 'queued'


def test_safe_qcow2_goes_through(glance_app, tmp_path):
    glance = glance_app(images=images(disk_format='qcow2'))
    app = stack(glance, tmp_path)
    assert put_range(app, 0, 4095, data=qcow2()).status_int == 204
    assert uploads(glance)[0].body == qcow2()


def test_glance_refusing_while_the_image_is_queued_keeps_every_byte(
        glance_app, tmp_path):
    """The data was judged before Glance had it: whatever Glance answers
    while the image stays queued (a disk_format not set yet, its own
    trouble) is not the data's fault."""
    glance = glance_app(images=images(), status=400)
    app = stack(glance, tmp_path)
    response = put_range(app, 0, N - 1)
    assert response.status_int == 400
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'paused_system'
    assert '400' in status['error'] and status['bytes_held'] == N
    glance.status = 204
    response = fakes.serve(app, request('POST', SESSION + '/finalize'))
    assert response.json['phase'] == 'finished_success'
    assert uploads(glance)[-1].body == DATA


def test_an_image_glance_left_unqueued_ends_the_session(glance_app,
                                                        tmp_path):
    glance = glance_app(images=images(), status=500)

    def killing(environ, start_response):
        # Glance fails the upload and leaves the image killed.
        try:
            return glance(environ, start_response)
        finally:
            if environ['REQUEST_METHOD'] == 'PUT':
                glance.images[IMAGE]['status'] = 'killed'
    app = stack(killing, tmp_path)
    assert put_range(app, 0, N - 1).status_int == 500
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'finished_failure'
    assert 'killed' in status['error'] and status['bytes_held'] == 0
    assert spooled(tmp_path) == []


def test_a_full_store_or_quota_keeps_every_byte(glance_app, tmp_path):
    glance = glance_app(images=images(), status=413)
    app = stack(glance, tmp_path)
    response = put_range(app, 0, N - 1)
    assert response.status_int == 413
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'paused_system'
    assert '413' in status['error'] and status['bytes_held'] == N


def test_limits(glance_app, tmp_path):
    other = '6f1c2a77-0000-4000-8000-000000000002'
    glance = glance_app(images=dict(images(), **{other: dict(
        status='queued', disk_format='raw', owner='p1')}))
    app = stack(glance, tmp_path, max_sessions_per_project='1')
    put_range(app, 0, 9)
    response = fakes.serve(app, request(
        'PUT', '/v2/images/%s/file' % other, DATA[:10],
        headers={'Content-Range': 'bytes 0-9/%d' % N}))
    assert response.status_int == 429
    app = stack(glance, tmp_path / 'small', spool_max_bytes=str(N - 1))
    response = put_range(app, 0, 9)
    assert response.status_int == 507
    assert 'cannot hold' in response.text
    app = stack(glance, tmp_path / 'big', max_image_size=str(N - 1))
    assert put_range(app, 0, 9).status_int == 413


def test_plain_uploads_and_other_requests_pass_through(glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    response = fakes.serve(app, request('PUT', PATH, DATA))
    assert response.status_int == 204
    assert uploads(glance)[0].body == DATA
    assert fakes.serve(app, request('GET', '/v2/images/%s' % IMAGE)
                       ).json['id'] == IMAGE
    assert not os.path.exists(tmp_path / IMAGE)


def test_works_with_no_options(monkeypatch, tmp_path):
    from sizeaware import opts
    default = next(o for o in opts.resumable_opts if o.name == 'spool_dir')
    assert default.default == '/var/lib/glance/sizeaware-spool'
    flt = resumable.ResumableFilter.factory({})(fakes.FakeGlance())
    assert flt.storage.spool.directory == default.default


def test_a_finalize_whose_worker_died_is_retried_by_the_next_range(
        glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path)
    assert put_range(app, 0, N - 2).status_int == 204
    # The request that completes the data dies before it finalizes: its
    # session moved to finalizing, then its locks went with its worker.
    session = app.storage.session(IMAGE, 'file', ('p1', 'u1'))
    with session.writer(N - 1, N - 1) as stream_class:
        writer = stream_class(lambda hint: DATA[N - 1:], 1, True)
        writer.read(1)
        assert session.commit(*writer.unclaimed()) == ([(0, N)], True)
    session.close()
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'paused_system' and status['bytes_held'] == N
    assert 'interrupted' in status['error']
    assert uploads(glance) == []
    response = put_range(app, N - 1, N - 1)
    assert response.status == '204 Fake'
    (upload,) = uploads(glance)
    assert upload.body == DATA
    assert spooled(tmp_path) == []


def test_post_to_the_session_extends_it(glance_app, tmp_path):
    glance = glance_app(images=images())
    app = stack(glance, tmp_path, session_inactivity_timeout=100)
    now = [1000.0]
    app.storage.clock = lambda: now[0]
    assert put_range(app, 0, 9).status_int == 204
    now[0] += 60
    other = fakes.serve(app, request('POST', SESSION, project='p2'))
    assert other.status_int == 404
    response = fakes.serve(app, request('POST', SESSION))
    assert response.status_int == 200
    document = response.json
    assert document['bytes_held'] == 10
    assert document['expires_at'] == '1970-01-01T00:19:20Z'
    # Past the expiry it had before the extend (1100 s).
    now[0] += 90
    assert fakes.serve(app, request('GET', SESSION)).json[
        'bytes_held'] == 10
    assert put_range(app, 10, N - 1).status_int == 204
    assert uploads(glance)[-1].body == DATA
