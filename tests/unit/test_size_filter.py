import errno
import io
import logging
import re
import sys
import types

from oslo_context import context as oslo_context
import pytest
import webob

from sizeaware import stream
from sizeaware.middleware import size_filter
from tests.unit import fakes

IMAGE = '6f1c2a77-0000-4000-8000-000000000001'
BODY = bytes(range(256)) * 400 + b'\nend'
N = len(BODY)


def make_filter(app, **local_conf):
    """The filter as paste.deploy builds it."""
    return size_filter.SizeFilter.factory({}, **local_conf)(app)


def put(body=BODY, size=None, chunked=False, path=None, headers=None,
        content_length=True, stream=None):
    path = path or '/v2/images/%s/file' % IMAGE
    request = webob.Request.blank(path, method='PUT')
    request.content_type = 'application/octet-stream'
    if size is not None:
        request.headers['X-OpenStack-Image-Size'] = size
    request.environ['wsgi.input'] = stream or io.BytesIO(body)
    if chunked:
        request.environ.pop('CONTENT_LENGTH', None)
        request.headers['Transfer-Encoding'] = 'chunked'
        request.environ['wsgi.input_terminated'] = True
    elif content_length:
        request.environ['CONTENT_LENGTH'] = str(len(body))
    else:
        request.environ.pop('CONTENT_LENGTH', None)
    for name, value in (headers or {}).items():
        request.headers[name] = value
    return request


def send(app, request, **local_conf):
    return fakes.serve(make_filter(app, **local_conf), request)


@pytest.mark.parametrize('read_size', [1, 7, 65536, 'line', 'iter', 'all',
                                       'into'])
@pytest.mark.parametrize('chunked', [False, True])
def test_matching_upload_reaches_the_app_whole(glance_app, read_size,
                                               chunked):
    app = glance_app(read_size=read_size)
    response = send(app, put(size=' %d\t' % N, chunked=chunked))
    assert response.status_int == 204
    assert app.last.body == BODY
    env = app.last.environ
    assert env['CONTENT_LENGTH'] == str(N)
    assert env['HTTP_X_OPENSTACK_IMAGE_SIZE'] == str(N)
    assert env['sizeaware.expected_size'] == N
    assert 'HTTP_TRANSFER_ENCODING' not in env
    assert env['wsgi.input'].received == N


@pytest.mark.parametrize('read_size', [1, 7, 65536, 'line', 'iter', 'into'])
def test_chunked_body_one_byte_short_is_400_with_counts(glance_app,
                                                        read_size):
    app = glance_app(read_size=read_size)
    response = send(app, put(size=str(N + 1), chunked=True))
    assert response.status_int == 400
    assert 'declared %d bytes, received %d bytes' % (N + 1, N) in (
        response.text)
    assert app.last.body == BODY


@pytest.mark.parametrize('read_size', [1, 7, 65536, 'line', 'iter', 'into'])
def test_chunked_body_one_byte_long_never_reaches_the_app(glance_app,
                                                          read_size):
    declared = N - 1
    app = glance_app(read_size=read_size)
    response = send(app, put(size=str(declared), chunked=True))
    assert response.status_int == 400
    assert 'received more than %d bytes' % declared in response.text
    # The end is proven before the last byte goes out: the app has a
    # strict prefix of the body, never the declared size's worth.
    body = app.last.body
    assert len(body) < declared
    assert body == BODY[:len(body)]


@pytest.mark.parametrize('on_error', ['raise', '500', 'swallow', 'wrap'])
def test_filter_answers_for_its_own_error(glance_app, on_error, caplog):
    app = glance_app(on_error=on_error)
    with caplog.at_level(logging.INFO):
        response = send(app, put(size=str(N - 1), chunked=True))
    assert response.status_int == 400
    assert 'received more than' in response.text
    assert isinstance(app.last.error, ValueError)
    (line,) = [r.getMessage() for r in caplog.records
               if r.name == size_filter.__name__]
    if on_error == '500':
        assert 'app_status=500' in line


def test_unrelated_failure_after_a_refusal_propagates(glance_app, caplog):
    """The database failing while Glance restores the image is not the
    filter's to hide behind a 400."""
    app = glance_app(on_error='unrelated')
    with caplog.at_level(logging.INFO):
        with pytest.raises(RuntimeError, match='database is down'):
            send(app, put(size=str(N - 1), chunked=True))
    (line,) = [r.getMessage() for r in caplog.records
               if r.name == size_filter.__name__]
    assert 'another reason' in line and 'database is down' in line


def test_application_errors_without_a_refusal_propagate(glance_app):
    def app(environ, start_response):
        raise KeyError('not ours')

    with pytest.raises(KeyError):
        fakes.serve(make_filter(app), put(size=str(N)))


class _FailingInput(io.RawIOBase):
    def __init__(self, data, exc):
        self.data = io.BytesIO(data)
        self.exc = exc

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self.data.readinto(buffer)
        if not count:
            raise self.exc
        return count


@pytest.mark.parametrize('exc, status, words', [
    (TimeoutError('timed out'), 408, 'timed out after'),
    # uwsgi's words for a Content-Length body, silent and gone.
    (OSError('timeout during read(65536) on wsgi.input'), 408,
     'timed out after'),
    (OSError('error during read(65536) on wsgi.input'), 499,
     'interrupted after'),
    # uwsgi.chunked_read() says the same for both: a client still there
    # gets the 408 it can act on.
    (OSError('unable to receive chunked part'), 408, 'timed out after'),
    (ConnectionResetError(errno.ECONNRESET, 'reset'), 499,
     'interrupted after'),
    (OSError('unexpected end of file while parsing chunked data'), 499,
     'interrupted after'),
])
def test_timeout_and_disconnect_are_told_apart(glance_app, exc, status,
                                               words):
    app = glance_app()
    response = send(app, put(size=str(N + 10), chunked=True,
                             stream=_FailingInput(BODY, exc)))
    assert response.status_int == status
    assert '%s %d of %d bytes' % (words, N, N + 10) in response.text


def test_length_framed_body_ending_early_is_a_disconnect(glance_app):
    app = glance_app()
    request = put(body=BODY[:100], size=str(N))
    request.environ['CONTENT_LENGTH'] = str(N)
    response = send(app, request)
    assert response.status_int == 499
    assert 'after 100 of %d bytes' % N in response.text


@pytest.mark.parametrize('size, status, text', [
    ('+5', 400, 'ASCII digits'),
    ('5_000', 400, 'ASCII digits'),
    ('-1', 400, 'ASCII digits'),
    ('1' * 26, 400, 'more than 20 digits'),
    ('', 400, 'empty'),
    ('5, 5', 400, 'more than once'),
    ('0x10', 400, 'ASCII digits'),
    (str(2 ** 40 + 1), 413, 'exceeds the maximum'),
])
@pytest.mark.parametrize('chunked', [False, True])
def test_header_alone_decides_before_the_body(glance_app, size, status, text,
                                              chunked):
    app = glance_app()
    request = put(size=size, chunked=chunked, stream=fakes.UntouchableInput())
    response = send(app, request)
    assert response.status_int == status
    assert text in response.text
    assert ('X-OpenStack-Image-Size' in response.text) == (status == 400)
    assert app.calls == []


@pytest.mark.parametrize('delta', [-1, +1])
def test_content_length_disagreeing_is_400_before_the_body(glance_app,
                                                           delta):
    app = glance_app()
    request = put(size=str(N + delta), stream=fakes.UntouchableInput())
    request.environ['CONTENT_LENGTH'] = str(N)
    response = send(app, request)
    assert response.status_int == 400
    assert 'Content-Length %d does not match' % N in response.text
    assert app.calls == []


def test_content_length_ignored_with_chunked(glance_app):
    app = glance_app()
    request = put(size=str(N), chunked=True)
    request.environ['CONTENT_LENGTH'] = '3'
    assert send(app, request).status_int == 204
    assert app.last.body == BODY


def test_zero_means_zero_bytes(glance_app):
    app = glance_app()
    response = send(app, put(body=b'12345', size='0', chunked=True))
    assert response.status_int == 400
    assert 'more than 0 bytes' in response.text
    assert app.calls == []
    response = send(app, put(body=b'', size='0', chunked=True))
    assert response.status_int == 204
    assert app.last.body == b''


def test_size_without_any_framing_means_empty_body(glance_app):
    app = glance_app()
    response = send(app, put(size='5', content_length=False,
                             stream=fakes.UntouchableInput()))
    assert response.status_int == 400
    assert 'received 0 bytes' in response.text


def test_max_image_size_is_inclusive_and_configurable_in_paste(glance_app):
    app = glance_app()
    assert send(app, put(size=str(N)), max_image_size=str(N)).status_int \
        == 204
    response = send(app, put(size=str(N + 1),
                             stream=fakes.UntouchableInput()),
                    max_image_size=str(N))
    assert response.status_int == 413


def test_invalid_option_value_fails_at_load_time(glance_app):
    with pytest.raises(ValueError):
        make_filter(glance_app(), max_image_size='-1')


@pytest.mark.parametrize('size', [None, str(N)])
def test_content_range_is_refused_on_plain_upload(glance_app, size):
    app = glance_app()
    response = send(app, put(size=size, headers={
        'Content-Range': 'bytes 0-9/%d' % N},
        stream=fakes.UntouchableInput()))
    assert response.status_int == 400
    assert 'Content-Range' in response.text
    assert app.calls == []


def test_other_transfer_codings_are_501(glance_app):
    app = glance_app()
    response = send(app, put(size='5', chunked=True, headers={
        'Transfer-Encoding': 'gzip, chunked'},
        stream=fakes.UntouchableInput()))
    assert response.status_int == 501
    assert 'gzip' in response.text
    assert app.calls == []


@pytest.mark.parametrize('headers', [
    {'Transfer-Encoding': 'chunked'},
    {'Transfer-Encoding': 'gzip, chunked'},
    {'Content-Length': '12abc'},
    {},
], ids=['chunked', 'other-coding', 'malformed-length', 'length'])
def test_no_header_passes_through_unchanged(glance_app, headers):
    app = glance_app(read_size=None)
    request = put(headers=headers)
    before = dict(request.environ)
    assert send(app, request).status_int == 204
    assert app.last.environ.keys() == before.keys()
    for key, value in before.items():
        assert app.last.environ[key] is value


@pytest.mark.parametrize('chunked, content_length, status', [
    (True, False, 411), (False, False, 411), (False, True, 204)])
def test_require_image_size(glance_app, chunked, content_length, status):
    app = glance_app()
    request = put(body=b'' if status == 411 and not chunked else BODY,
                  chunked=chunked, content_length=content_length)
    response = send(app, request, require_image_size='true')
    assert response.status_int == status
    if status == 411:
        assert 'X-OpenStack-Image-Size' in response.text


@pytest.mark.parametrize('method, path', [
    ('GET', '/v2/images/%s/file' % IMAGE),
    ('POST', '/v2/images/%s/file' % IMAGE),
    ('PUT', '/v2/images/%s' % IMAGE),
    ('PUT', '/v2/images/%s/file/extra' % IMAGE),
    ('PUT', '/v1/images/%s/file' % IMAGE),
    ('PUT', '/v2x/images/%s/file' % IMAGE),
    ('PATCH', '/v2/images/%s/stage' % IMAGE),
])
def test_other_requests_are_untouched(glance_app, method, path):
    app = glance_app(read_size=None)
    request = put(size='nonsense', path=path)
    request.method = method
    assert send(app, request).status_int == 204
    assert app.last.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == 'nonsense'


@pytest.mark.parametrize('path', [
    '/v2/images/%s/stage' % IMAGE, '/v2/images/%s/file/' % IMAGE,
    '/v2.1/images/%s/file' % IMAGE, '/v2.17/images/%s/stage' % IMAGE])
def test_stage_trailing_slash_and_minor_versions_are_covered(glance_app,
                                                             path):
    response = send(glance_app(), put(size='abc', path=path))
    assert response.status_int == 400


def test_script_name_prefix_is_not_part_of_the_match(glance_app):
    request = put(size='abc')
    request.environ['SCRIPT_NAME'] = '/image'
    assert send(glance_app(), request).status_int == 400


def _filter_log_lines(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == size_filter.__name__]


def test_one_log_line_with_request_id_and_sizes(glance_app, caplog):
    request = put(size=str(N + 1), chunked=True)
    request.environ['openstack.request_id'] = 'req-abc123'
    with caplog.at_level(logging.INFO):
        response = send(glance_app(), request)
    assert response.status_int == 400
    (line,) = _filter_log_lines(caplog)
    assert 'req-abc123' in line
    assert "image_id='%s'" % IMAGE in line
    assert 'declared=%d received=%d status=400' % (N + 1, N) in line


def test_log_line_cannot_be_forged_through_the_path(glance_app, caplog):
    image_id = 'x\nFORGED Refused image upload: request_id=req-0'
    with caplog.at_level(logging.INFO):
        send(glance_app(), put(size='abc',
                               path='/v2/images/%s/file' % image_id))
    (line,) = _filter_log_lines(caplog)
    assert '\n' not in line
    assert r"image_id='x\nFORGED" in line


def test_request_id_never_comes_from_a_stale_thread_local(glance_app,
                                                          caplog):
    """Without a context before the filter, the filter names the request
    itself and says so in the response, rather than taking whatever
    context a previous request left on this thread."""
    oslo_context.RequestContext(request_id='req-stale-one')
    assert oslo_context.get_current().request_id == 'req-stale-one'
    with caplog.at_level(logging.INFO):
        response = send(glance_app(), put(size='abc'))
    (line,) = _filter_log_lines(caplog)
    assert 'req-stale-one' not in line
    request_id = response.headers['x-openstack-request-id']
    assert request_id.startswith('req-') and request_id in line


def test_request_id_of_glances_context(glance_app, caplog):
    request = put(size='abc')
    request.environ['webob.adhoc_attrs'] = {
        'context': oslo_context.RequestContext(request_id='req-glance')}
    with caplog.at_level(logging.INFO):
        response = send(glance_app(), request)
    assert 'req-glance' in _filter_log_lines(caplog)[0]
    # Glance's context middleware names the response on the way out.
    assert 'x-openstack-request-id' not in response.headers


@pytest.fixture
def fake_uwsgi(monkeypatch):
    """uwsgi's module exists only inside uwsgi; this plays its part."""
    module = types.ModuleType('uwsgi')
    monkeypatch.setitem(sys.modules, 'uwsgi', module)
    return module


@pytest.mark.parametrize('delta, status', [(0, 204), (1, 400), (-1, 400)])
def test_uwsgi_chunked_body_is_read_through_chunked_read(
        glance_app, fake_uwsgi, delta, status):
    chunks = [BODY[i:i + 4096] for i in range(0, N, 4096)]
    fake_uwsgi.chunked_read = fakes.ChunkSource(chunks)
    app = glance_app()
    request = put(size=str(N + delta), chunked=True,
                  stream=fakes.UntouchableInput())
    del request.environ['wsgi.input_terminated']
    request.environ['uwsgi.version'] = b'2.0.30'
    response = send(app, request)
    assert response.status_int == status
    if status == 204:
        assert app.last.body == BODY


def _eventlet_chunked_input(data, pieces=3000, terminate=True):
    """eventlet's own ``wsgi.input`` over a chunked request body."""
    from eventlet import wsgi
    raw = b''.join(b'%x\r\n%s\r\n' % (len(data[i:i + pieces]),
                                      data[i:i + pieces])
                   for i in range(0, len(data), pieces))
    if terminate:
        raw += b'0\r\n\r\n'
    return wsgi.Input(io.BufferedReader(io.BytesIO(raw)), None, None,
                      chunked_input=True)


@pytest.mark.parametrize('delta, status', [(0, 204), (1, 400), (-1, 400)])
def test_eventlet_chunked_body_is_read_to_its_end(glance_app, delta, status):
    """eventlet ends wsgi.input at the terminating chunk without setting
    wsgi.input_terminated."""
    app = glance_app()
    request = put(size=str(N + delta), chunked=True,
                  stream=_eventlet_chunked_input(BODY))
    del request.environ['wsgi.input_terminated']
    response = send(app, request)
    assert response.status_int == status
    if status == 204:
        assert app.last.body == BODY


def test_eventlet_chunked_body_broken_off_is_a_disconnect(glance_app):
    app = glance_app()
    request = put(size=str(N), chunked=True,
                  stream=_eventlet_chunked_input(BODY[:5000],
                                                 terminate=False))
    del request.environ['wsgi.input_terminated']
    response = send(app, request)
    assert response.status_int == 499
    # eventlet drops what it gathered in the read that broke off.
    assert re.search(r'interrupted after [0-9]+ of %d bytes' % N,
                     response.text)


def test_chunked_body_on_a_server_that_cannot_end_it(glance_app):
    request = put(size=str(N), chunked=True, stream=fakes.UntouchableInput())
    del request.environ['wsgi.input_terminated']
    response = send(glance_app(), request)
    assert response.status_int == 400
    assert 'Content-Length' in response.text


def test_options_from_the_service_config_file(glance_app, tmp_path):
    conf_file = tmp_path / 'svc.conf'
    conf_file.write_text('[sizeaware]\nmax_image_size = 10\n'
                         'require_image_size = true\n')
    flt = make_filter(glance_app(), oslo_config_project='svc',
                      oslo_config_file=str(conf_file))
    assert flt.max_image_size == 10
    assert flt.require_image_size is True
    flt = make_filter(glance_app(), oslo_config_project='svc',
                      oslo_config_file=str(conf_file), max_image_size='20')
    assert flt.max_image_size == 20


def test_app_reads_the_reader_itself_without_webob_wrappers():
    """No LimitedLengthFile or BufferedReader between the app and the
    reader: the reader already ends at the declared size."""
    seen = []

    def app(environ, start_response):
        body_file = webob.Request(environ).body_file
        seen.append((body_file, body_file.read()))
        start_response('204 No Content', [])
        return []

    assert fakes.serve(make_filter(app), put(size=str(N))).status_int == 204
    (body_file, data), = seen
    assert isinstance(body_file, stream.BodyStream)
    assert data == BODY
