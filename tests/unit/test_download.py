"""The download filter, in front of a fake Glance that answers downloads
as Glance 33 does."""

import hashlib
import logging
import os

from glance_store._drivers import filesystem
from glance_store._drivers import http
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from oslo_config import cfg
import pytest
import webob

from sizeaware import exceptions
from sizeaware import opts
from sizeaware.middleware import download
from tests.unit import fakes

IMAGE = '6f1c2a77-0000-4000-8000-0000000000d1'
DATA = os.urandom(200 * 1024 + 3)
N = len(DATA)
PATH = '/v2/images/%s/file' % IMAGE
SHA512 = hashlib.sha512(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
ETAG = '"%s"' % SHA512
RID = 'req-6f1c2a77-0000-4000-8000-0000000000d1'


def config(**overrides):
    """Glance's configuration as the filter finds it: two backends, a
    file one and an rbd one; unless told otherwise, the store types that
    read at an offset named (glance_store is not configured here)."""
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt('enabled_backends'))
    conf.register_opts(opts.download_filter_opts, group=opts.GROUP)
    conf(args=[], default_config_files=[], default_config_dirs=[])
    conf.set_override('enabled_backends', {'fs': 'file', 'ceph': 'rbd'})
    overrides.setdefault('ranged_store_types', ['file'])
    for name, value in overrides.items():
        conf.set_override(name, value, group=opts.GROUP)
    return conf


def stack(app, **overrides):
    return download.DownloadFilter(app, config(**overrides))


def image(data=DATA, **extra):
    record = dict(status='active', size=len(data), owner='p1', stores='fs',
                  checksum=hashlib.md5(data).hexdigest(),
                  os_hash_algo='sha512',
                  os_hash_value=hashlib.sha512(data).hexdigest(), data=data,
                  piece=4096)
    record.update(extra)
    return {IMAGE: record}


def get_request(path=PATH, project='p1', **headers):
    req = webob.Request.blank(path)
    req.headers['X-Project-Id'] = project
    req.environ['openstack.request_id'] = RID
    for name, value in headers.items():
        req.headers[name.replace('_', '-')] = value
    return req


def get_environ(**headers):
    return get_request(**headers).environ


def get(app, path=PATH, project='p1', **headers):
    return fakes.serve(app, get_request(path, project, **headers))


def downloads(glance):
    return [c for c in glance.calls
            if c.environ['PATH_INFO'].endswith('/file')]


def glance_range(glance):
    """The Range the fake Glance received with the download, or None."""
    (call,) = downloads(glance)
    return call.environ.get('HTTP_RANGE')


def assert_whole(resp, glance, data=DATA):
    assert resp.status_int == 200, resp
    assert resp.body == data
    assert resp.headers['ETag'] == '"%s"' % hashlib.sha512(data).hexdigest()
    assert resp.headers['Accept-Ranges'] == 'bytes'
    assert resp.headers['Content-MD5'] == hashlib.md5(data).hexdigest()
    assert glance_range(glance) is None


def assert_part(resp, first, end):
    assert resp.status_int == 206, resp
    assert resp.body == DATA[first:end]
    assert resp.headers['Content-Range'] == 'bytes %d-%d/%d' % (
        first, end - 1, N)
    assert resp.headers['ETag'] == ETAG
    assert resp.headers['Accept-Ranges'] == 'bytes'
    assert 'Content-MD5' not in resp.headers


# -- whole image, validators --------------------------------------------


def test_whole_image_carries_etag_and_accept_ranges(glance_app):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance)), glance)


def test_without_the_filter_glance_sends_no_validator(glance_app):
    glance = glance_app(images=image())
    resp = get(glance)
    assert resp.status_int == 200
    assert 'ETag' not in resp.headers
    assert 'Accept-Ranges' not in resp.headers


def test_etag_falls_back_to_checksum(glance_app):
    glance = glance_app(images=image(os_hash_algo=None, os_hash_value=None))
    resp = get(stack(glance))
    assert resp.headers['ETag'] == '"%s"' % MD5
    resp = get(stack(glance), Range='bytes=0-9', If_Range='"%s"' % MD5)
    assert resp.status_int == 206


def test_no_checksum_means_no_etag_and_no_range_by_if_range(glance_app):
    glance = glance_app(images=image(os_hash_algo=None, os_hash_value=None,
                                     checksum=None))
    resp = get(stack(glance), Range='bytes=0-9', If_Range=ETAG)
    assert resp.status_int == 200
    assert 'ETag' not in resp.headers
    assert resp.body == DATA


def test_minor_version_path(glance_app):
    glance = glance_app(images=image())
    resp = get(stack(glance), path='/v2.17/images/%s/file' % IMAGE,
               Range='bytes=5-9')
    assert_part(resp, 5, 10)


# -- ranges -------------------------------------------------------------


SATISFIABLE = {
    'first_byte': ('bytes=0-0', 0, 1),
    'last_byte': ('bytes=%d-%d' % (N - 1, N - 1), N - 1, N),
    'middle': ('bytes=4093-12300', 4093, 12301),
    'suffix': ('bytes=-1000', N - 1000, N),
    'open_end': ('bytes=%d-' % (N - 5000), N - 5000, N),
    'whole_as_range': ('bytes=0-', 0, N),
    'end_past_size': ('bytes=10-%d' % (N + 100), 10, N),
    'suffix_longer_than_image': ('bytes=-%d' % (N + 7), 0, N),
    'upper_case_unit': ('BYTES=3-7', 3, 8),
}


@pytest.mark.parametrize('case', sorted(SATISFIABLE))
def test_satisfiable_range_is_206_of_exactly_it(glance_app, case):
    value, first, end = SATISFIABLE[case]
    glance = glance_app(images=image())
    assert_part(get(stack(glance), Range=value), first, end)
    # Glance is asked in plain form, its end inside the image.
    assert glance_range(glance) == 'bytes=%d-%d' % (first, end - 1)


UNSATISFIABLE = {
    'start_at_size': 'bytes=%d-' % N,
    'start_past_size': 'bytes=%d-%d' % (N + 10, N + 20),
    'suffix_of_zero': 'bytes=-0',
}


@pytest.mark.parametrize('case', sorted(UNSATISFIABLE))
def test_unsatisfiable_range_is_416_from_the_filter(glance_app, caplog,
                                                     case):
    glance = glance_app(images=image())
    caplog.set_level(logging.INFO, logger=download.__name__)
    resp = get(stack(glance), Range=UNSATISFIABLE[case])
    assert resp.status_int == 416
    assert resp.headers['Content-Range'] == 'bytes */%d' % N
    assert resp.headers['ETag'] == ETAG
    assert downloads(glance) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith('Refused image download: request_id=%s ' % RID)
    assert 'status=416' in line
    assert repr(UNSATISFIABLE[case]) in line


def test_glance_alone_answers_bytes_minus_zero_with_the_whole_image(
        glance_app):
    glance = glance_app(images=image())
    resp = get(glance, Range='bytes=-0')
    assert resp.status_int == 206
    assert resp.body == DATA


IGNORED = {
    'inverted': 'bytes=10-5',
    'malformed': 'bytes=abc',
    'no_dash': 'bytes=5',
    'empty_suffix': 'bytes=-',
    'other_unit': 'items=0-5',
    'several': 'bytes=0-1,5-9',
    'several_suffix': 'bytes=-5, -3',
    'empty': '',
}


@pytest.mark.parametrize('case', sorted(IGNORED))
def test_range_to_ignore_gets_the_whole_image(glance_app, case):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance), Range=IGNORED[case]), glance)


@pytest.mark.parametrize('case', ['inverted', 'several'])
def test_glance_alone_refuses_ranges_it_should_ignore(glance_app, case):
    glance = glance_app(images=image())
    assert get(glance, Range=IGNORED[case]).status_int in (400, 416)


def test_glance_alone_fails_on_an_empty_suffix(glance_app):
    # webob raises from inside Glance: the server drops the connection.
    glance = glance_app(images=image())
    with pytest.raises(ValueError):
        get(glance, Range='bytes=-')


def test_content_range_on_a_get_is_not_a_range(glance_app):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance), Content_Range='bytes 0-9/%d' % N),
                 glance)
    assert 'HTTP_CONTENT_RANGE' not in downloads(glance)[0].environ
    # Glance alone serves it as a range.
    assert get(glance, Content_Range='bytes 0-9/%d' % N).status_int == 206


def test_store_without_offsets_gets_the_whole_image_not_400(glance_app):
    glance = glance_app(images=image(stores='ceph', ranged=False))
    resp = get(stack(glance), Range='bytes=0-9')
    assert resp.status_int == 200
    assert resp.body == DATA
    assert resp.headers['Accept-Ranges'] == 'none'
    assert resp.headers['ETag'] == ETAG
    assert glance_range(glance) is None
    assert get(glance, Range='bytes=0-9').status_int == 400


def test_store_type_or_backend_name_from_the_options(glance_app):
    glance = glance_app(images=image(stores='ceph'))
    app = stack(glance, ranged_store_types=['rbd'])
    assert_part(get(app, Range='bytes=1-2'), 1, 3)
    app = stack(glance, ranged_store_types=['ceph'])
    assert_part(get(app, Range='bytes=1-2'), 1, 3)


def test_image_in_two_backends_is_ranged_only_if_both_are(glance_app):
    glance = glance_app(images=image(stores='fs,ceph'))
    resp = get(stack(glance), Range='bytes=1-2')
    assert resp.status_int == 200
    assert resp.headers['Accept-Ranges'] == 'none'


def test_deployment_without_backends_uses_the_default_store(glance_app):
    glance = glance_app(images=image(stores=None))
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.StrOpt('default_store', default='file'),
                      group='glance_store')
    conf(args=[], default_config_files=[], default_config_dirs=[])
    app = download.DownloadFilter(glance, conf)
    asked = []

    def find_store(name, multi):
        asked.append((name, multi))
        return filesystem.Store(conf)

    app.find_store = find_store
    assert_part(get(app, Range='bytes=1-2'), 1, 3)
    assert asked == [('file', False)]


def glance_store_drivers():
    """Real glance_store drivers, unconfigured: a filesystem store (reads
    at an offset) and an HTTP store (does not)."""
    conf = cfg.ConfigOpts()
    conf(args=[], default_config_files=[], default_config_dirs=[])
    return {'fs': filesystem.Store(conf, backend='fs'),
            'ceph': http.Store(conf, backend='ceph')}


def test_by_default_glance_store_says_which_backend_reads_at_offsets(
        glance_app):
    glance = glance_app(images=dict(image(stores='fs'), **{
        'other': dict(image()[IMAGE], stores='ceph', ranged=False)}))
    app = stack(glance, ranged_store_types=[])
    drivers = glance_store_drivers()
    asked = []

    def find_store(name, multi):
        asked.append((name, multi))
        return drivers[name]

    app.find_store = find_store
    for _ in range(2):
        assert_part(get(app, Range='bytes=1-2'), 1, 3)
        resp = get(app, path='/v2/images/other/file', Range='bytes=1-2')
        assert resp.status_int == 200
        assert resp.headers['Accept-Ranges'] == 'none'
        assert resp.body == DATA
    # Once per backend and process.
    assert asked == [('fs', True), ('ceph', True)]


def test_backend_glance_store_does_not_know_is_served_whole(glance_app,
                                                            caplog):
    glance = glance_app(images=image(stores='fs'))
    app = stack(glance, ranged_store_types=[])
    caplog.set_level(logging.WARNING, logger=download.__name__)
    # glance_store is not configured in this process: its own lookup fails.
    for _ in range(2):
        resp = get(app, Range='bytes=1-2')
        assert resp.status_int == 200
        assert resp.headers['Accept-Ranges'] == 'none'
    (line,) = [r.getMessage() for r in caplog.records]
    assert "backend 'fs'" in line


def test_paste_section_options(glance_app):
    glance = glance_app(images=image(stores='ceph'))
    app = download.DownloadFilter.factory(
        {}, ranged_store_types='ceph, fs', verify_download='true')(glance)
    assert app.verify is True
    assert_part(get(app, Range='bytes=1-2'), 1, 3)


def test_empty_image_ignores_ranges(glance_app):
    glance = glance_app(images=image(data=b''))
    resp = get(stack(glance), Range='bytes=0-')
    assert resp.status_int == 200
    assert resp.body == b''


# -- conditions ---------------------------------------------------------


def test_if_range_fresh_gets_the_range(glance_app):
    glance = glance_app(images=image())
    assert_part(get(stack(glance), Range='bytes=100-', If_Range=ETAG),
                100, N)
    assert 'HTTP_IF_RANGE' not in downloads(glance)[0].environ


@pytest.mark.parametrize('validator', [
    '"%s"' % ('0' * 128), 'W/%s' % ETAG, 'Sat, 29 Oct 1994 19:43:31 GMT',
    '*', ETAG[:-1]])
def test_if_range_stale_or_weak_gets_the_whole_image(glance_app,
                                                     validator):
    glance = glance_app(images=image())
    resp = get(stack(glance), Range='bytes=100-', If_Range=validator)
    assert_whole(resp, glance)


def test_glance_alone_splices_with_a_stale_if_range(glance_app):
    glance = glance_app(images=image())
    resp = get(glance, Range='bytes=100-', If_Range='"stale"')
    assert resp.status_int == 206


def test_if_range_without_range_is_ignored(glance_app):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance), If_Range='"stale"'), glance)


@pytest.mark.parametrize('value', [ETAG, '*', '"other", %s' % ETAG])
def test_if_match_matching_is_served(glance_app, value):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance), If_Match=value), glance)


@pytest.mark.parametrize('value', ['"other"', 'W/%s' % ETAG])
def test_if_match_not_matching_is_412(glance_app, caplog, value):
    glance = glance_app(images=image())
    caplog.set_level(logging.INFO, logger=download.__name__)
    resp = get(stack(glance), If_Match=value, Range='bytes=0-1')
    assert resp.status_int == 412
    assert resp.headers['ETag'] == ETAG
    assert downloads(glance) == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert 'request_id=%s' % RID in line and 'status=412' in line


@pytest.mark.parametrize('value', [ETAG, 'W/%s' % ETAG, '*',
                                   '"a", %s' % ETAG])
def test_if_none_match_matching_is_304(glance_app, caplog, value):
    glance = glance_app(images=image())
    caplog.set_level(logging.INFO, logger=download.__name__)
    resp = get(stack(glance), If_None_Match=value)
    assert resp.status_int == 304
    assert resp.body == b''
    assert resp.headers['ETag'] == ETAG
    assert downloads(glance) == []
    assert caplog.records == []


def test_if_none_match_other_is_served(glance_app):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance), If_None_Match='"other"'), glance)


# -- what the filter leaves to Glance -----------------------------------


def test_unknown_image_is_glance_answer(glance_app):
    glance = glance_app(images=image())
    resp = get(stack(glance), path='/v2/images/nope/file', Range='bytes=0-')
    assert resp.status_int == 404
    assert len(downloads(glance)) == 1


def test_image_of_another_project_is_glance_answer(glance_app):
    glance = glance_app(images=image())
    resp = get(stack(glance), project='p2', Range='bytes=0-')
    assert resp.status_int == 404
    assert 'ETag' not in resp.headers


def test_record_glance_will_not_show_leaves_the_download_to_glance(
        glance_app):
    """An expired token, a server error: whatever Glance answers for the
    record, the download goes to Glance as it came."""
    glance = glance_app(images=image())

    def app(environ, start_response):
        if not environ['PATH_INFO'].endswith('/file'):
            glance(environ, start_response).close()
            start_response('401 Unauthorized', [('Content-Length', '0')])
            return []
        return glance(environ, start_response)

    resp = get(stack(app), Range='bytes=-0', If_Match='"other"')
    # Glance 33's own answer to bytes=-0: the whole image.
    assert resp.status_int == 206
    assert resp.body == DATA
    assert 'ETag' not in resp.headers
    assert glance_range(glance) == 'bytes=-0'


def test_queued_image_is_glance_answer(glance_app):
    glance = glance_app(images=image(status='queued', size=None))
    resp = get(stack(glance), Range='bytes=0-')
    assert resp.status_int == 204
    assert 'ETag' not in resp.headers
    assert glance_range(glance) == 'bytes=0-'


@pytest.mark.parametrize('method,path', [
    ('PUT', PATH), ('GET', '/v2/images/%s' % IMAGE),
    ('GET', PATH + '/session'), ('HEAD', PATH), ('DELETE', PATH)])
def test_other_requests_pass_untouched(glance_app, method, path):
    glance = glance_app(read_size=None, images=image())
    req = webob.Request.blank(path, method=method)
    req.headers['Range'] = 'bytes=0-0'
    fakes.serve(stack(glance), req)
    (call,) = glance.calls
    assert call.environ['PATH_INFO'] == path
    assert call.environ['HTTP_RANGE'] == 'bytes=0-0'


def test_record_request_carries_no_range_or_condition(glance_app):
    glance = glance_app(images=image())
    get(stack(glance), Range='bytes=0-1', If_Range=ETAG, If_Match=ETAG)
    record = glance.calls[0].environ
    assert record['PATH_INFO'] == '/v2/images/%s' % IMAGE
    for key in ('HTTP_RANGE', 'HTTP_IF_RANGE', 'HTTP_IF_MATCH'):
        assert key not in record


# -- verification -------------------------------------------------------


def corrupt(data, offset):
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1:]


def serve_until_broken(app, **headers):
    """Drain the download as a server would; the bytes delivered before
    the iterator raised, and what it raised."""
    started = []
    app_iter = app(get_environ(**headers),
                   lambda s, h, e=None: started.append((s, h)))
    delivered = []
    try:
        for piece in app_iter:
            delivered.append(bytes(piece))
    except Exception as exc:  # noqa: B902 -- what the server sees
        return started[-1], b''.join(delivered), exc
    finally:
        app_iter.close()
    return started[-1], b''.join(delivered), None


def test_verified_download_is_whole(glance_app):
    glance = glance_app(images=image())
    assert_whole(get(stack(glance, verify_download=True)), glance)


@pytest.mark.parametrize('offset', [0, 4095, 4096, N // 2, N - 1])
def test_corrupt_data_breaks_before_the_last_byte(glance_app, caplog,
                                                  offset):
    glance = glance_app(images=image(served=corrupt(DATA, offset)))
    caplog.set_level(logging.INFO, logger=download.__name__)
    (status, headers), body, exc = serve_until_broken(
        stack(glance, verify_download=True))
    assert status.startswith('200')
    assert isinstance(exc, exceptions.DownloadCorrupt)
    assert len(body) < N
    assert body == corrupt(DATA, offset)[:len(body)]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith('Refused image download: request_id=%s ' % RID)
    assert 'sha512' in line and 'sent=%d' % len(body) in line


@pytest.mark.parametrize('served', [DATA[:-1], DATA + b'x', b''])
def test_data_of_another_size_breaks_before_the_last_byte(glance_app,
                                                          served):
    glance = glance_app(images=image(served=served))
    _, body, exc = serve_until_broken(stack(glance, verify_download=True))
    assert isinstance(exc, exceptions.DownloadCorrupt)
    assert len(body) < N
    assert 'size' in str(exc)


def test_store_read_error_breaks_the_download(glance_app):
    class Failing(fakes.LeakTrackingIter):
        def __iter__(self):
            yield DATA[:4096]
            raise OSError('connection to the store reset')

    glance = glance_app(images=image())

    def app(environ, start_response):
        if environ['PATH_INFO'].endswith('/file'):
            glance(environ, start_response).close()
            failing = Failing([])
            glance.app_iters.append(failing)
            return failing
        return glance(environ, start_response)

    _, body, exc = serve_until_broken(stack(app, verify_download=True))
    assert isinstance(exc, exceptions.DownloadCorrupt)
    assert body == DATA[:4096]
    assert 'reset' in str(exc)


def test_without_verification_corrupt_data_completes(glance_app):
    glance = glance_app(images=image(served=corrupt(DATA, 7)))
    resp = get(stack(glance))
    assert resp.status_int == 200
    assert resp.body == corrupt(DATA, 7)


def test_a_range_is_not_verified(glance_app):
    glance = glance_app(images=image(served=corrupt(DATA, 7)))
    resp = get(stack(glance, verify_download=True), Range='bytes=0-99')
    assert resp.status_int == 206
    assert resp.body == corrupt(DATA, 7)[:100]


def test_verification_by_checksum_without_os_hash(glance_app):
    glance = glance_app(images=image(os_hash_algo=None, os_hash_value=None,
                                     served=corrupt(DATA, 3)))
    _, body, exc = serve_until_broken(stack(glance, verify_download=True))
    assert isinstance(exc, exceptions.DownloadCorrupt)
    assert 'md5' in str(exc)


def test_unknown_hash_algorithm_is_not_verified(glance_app):
    glance = glance_app(images=image(os_hash_algo='nohash'))
    resp = get(stack(glance, verify_download=True))
    assert resp.status_int == 200
    assert resp.body == DATA


def test_broken_download_raises_again_and_closes(glance_app):
    glance = glance_app(images=image(served=corrupt(DATA, N - 1)))
    app = stack(glance, verify_download=True)
    app_iter = app(get_environ(), lambda *a: None)
    with pytest.raises(exceptions.DownloadCorrupt) as first:
        list(app_iter)
    with pytest.raises(exceptions.DownloadCorrupt) as again:
        next(app_iter)
    assert again.value is first.value
    app_iter.close()


SMALL = DATA[:20000]


@settings(max_examples=80, deadline=None)
@given(piece=st.integers(1, 21000), offset=st.integers(0, len(SMALL) - 1),
       bad=st.booleans())
def test_verification_over_any_chunking(piece, offset, bad):
    served = corrupt(SMALL, offset) if bad else SMALL
    glance = fakes.FakeGlance(images=image(data=SMALL, served=served,
                                           piece=piece))
    _, body, exc = serve_until_broken(stack(glance, verify_download=True))
    glance.check()
    if bad:
        assert isinstance(exc, exceptions.DownloadCorrupt)
        assert len(body) < len(SMALL)
        assert body == served[:len(body)]
    else:
        assert exc is None
        assert body == SMALL


def test_pieces_are_relayed_uncopied(glance_app):
    glance = glance_app(images=image(piece=65536))
    app_iter = stack(glance, verify_download=True)(
        get_environ(), lambda *a: None)
    try:
        relayed = list(app_iter)
    finally:
        app_iter.close()
    (sent,) = [i for i in glance.app_iters if len(i.chunks) > 1]
    assert len(relayed) == len(sent.chunks)
    assert all(a is b for a, b in zip(relayed, sent.chunks))


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 3000), first=st.integers(0, 3100),
       length=st.integers(1, 3100), suffix=st.booleans())
def test_any_single_range(size, first, length, suffix):
    data = DATA[:size]
    glance = fakes.FakeGlance(images=image(data=data, piece=97))
    if suffix:
        value = 'bytes=-%d' % length
        want = (max(0, size - length), size)
    else:
        value = 'bytes=%d-%d' % (first, first + length - 1)
        want = (first, min(size, first + length))
    resp = get(stack(glance), Range=value)
    glance.check()
    if want[0] >= size:
        assert resp.status_int == 416
        assert resp.headers['Content-Range'] == 'bytes */%d' % size
    else:
        assert resp.status_int == 206
        assert resp.body == data[want[0]:want[1]]
        assert resp.headers['Content-Range'] == 'bytes %d-%d/%d' % (
            want[0], want[1] - 1, size)


def test_download_closed_mid_way_closes_glance_and_logs_nothing(
        glance_app, caplog):
    """A client gone mid-download: the server closes the verified body
    after a few pieces; Glance's body is closed and nothing is refused."""
    glance = glance_app(images=image())
    caplog.set_level(logging.INFO, logger=download.__name__)
    app_iter = stack(glance, verify_download=True)(get_environ(),
                                                   lambda *a: None)
    assert next(app_iter) == DATA[:4096]
    assert next(app_iter) == DATA[4096:8192]
    app_iter.close()
    assert all(i.closed for i in glance.app_iters)
    assert caplog.records == []


def test_unverified_answers_are_glance_own_body(glance_app):
    glance = glance_app(images=image())
    for app, headers in ((stack(glance), {}),
                         (stack(glance, verify_download=True),
                          {'Range': 'bytes=0-9'})):
        app_iter = app(get_environ(**headers), lambda *a: None)
        assert app_iter is glance.app_iters[-1]
        app_iter.close()
