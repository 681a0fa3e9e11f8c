import io
import logging
import sys
import types

import pytest
import webob

from sizeaware.middleware import size_filter
from tests.unit import fakes

IMAGE = '6f1c2a77-0000-4000-8000-000000000001'
BODY = bytes(range(256)) * 400 + b'\nend'


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


@pytest.mark.parametrize('read_size', [1, 7, 65536, 'line', 'iter', 'all'])
@pytest.mark.parametrize('chunked', [False, True])
def test_matching_upload_reaches_the_app_whole(read_size, chunked):
    app = fakes.FakeGlance(read_size=read_size)
    response = put(size=' %d\t' % len(BODY), chunked=chunked).get_response(
        make_filter(app))
    assert response.status_int == 204
    assert app.body == BODY
    env = app.environ
    assert env['CONTENT_LENGTH'] == str(len(BODY))
    assert env['HTTP_X_OPENSTACK_IMAGE_SIZE'] == str(len(BODY))
    assert env['sizeaware.expected_size'] == len(BODY)
    assert 'HTTP_TRANSFER_ENCODING' not in env
    assert env['wsgi.input'].received == len(BODY)


@pytest.mark.parametrize('read_size', [1, 7, 65536, 'line', 'iter'])
@pytest.mark.parametrize('delta', [-1, +1])
def test_chunked_mismatch_is_400_with_counts(read_size, delta):
    declared = len(BODY) + delta
    app = fakes.FakeGlance(read_size=read_size, on_error='raise')
    response = put(size=str(declared), chunked=True).get_response(
        make_filter(app))
    assert response.status_int == 400
    if delta > 0:
        expected = 'declared %d bytes, received %d bytes' % (declared,
                                                            len(BODY))
    else:
        expected = 'received more than %d bytes' % declared
    assert expected in response.text
    assert len(app.body or b'') <= declared


@pytest.mark.parametrize('on_error', ['raise', '500', 'swallow'])
def test_filter_has_the_final_word(on_error):
    app = fakes.FakeGlance(on_error=on_error)
    response = put(size=str(len(BODY) - 1), chunked=True).get_response(
        make_filter(app))
    assert response.status_int == 400
    assert app.error is not None


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
def test_header_alone_decides_before_the_body(size, status, text, chunked):
    app = fakes.FakeGlance()
    request = put(size=size, chunked=chunked, stream=fakes.UntouchableInput())
    response = request.get_response(make_filter(app))
    assert response.status_int == status
    assert text in response.text
    assert 'X-OpenStack-Image-Size' in response.text or status == 413
    assert app.calls == 0


@pytest.mark.parametrize('delta', [-1, +1])
def test_content_length_disagreeing_is_400_before_the_body(delta):
    app = fakes.FakeGlance()
    request = put(size=str(len(BODY) + delta),
                  stream=fakes.UntouchableInput())
    request.environ['CONTENT_LENGTH'] = str(len(BODY))
    response = request.get_response(make_filter(app))
    assert response.status_int == 400
    assert 'Content-Length %d does not match' % len(BODY) in response.text
    assert app.calls == 0


def test_content_length_ignored_with_chunked():
    app = fakes.FakeGlance()
    request = put(size=str(len(BODY)), chunked=True)
    request.environ['CONTENT_LENGTH'] = '3'
    assert request.get_response(make_filter(app)).status_int == 204
    assert app.body == BODY


def test_zero_means_zero_bytes():
    app = fakes.FakeGlance()
    response = put(body=b'12345', size='0', chunked=True).get_response(
        make_filter(app))
    assert response.status_int == 400
    assert 'more than 0 bytes' in response.text
    assert app.calls == 0
    app = fakes.FakeGlance()
    response = put(body=b'', size='0', chunked=True).get_response(
        make_filter(app))
    assert response.status_int == 204
    assert app.body == b''


def test_size_without_any_framing_means_empty_body():
    app = fakes.FakeGlance()
    response = put(size='5', content_length=False,
                   stream=fakes.UntouchableInput()).get_response(
        make_filter(app))
    assert response.status_int == 400
    assert 'received 0 bytes' in response.text


def test_max_image_size_is_inclusive_and_configurable_in_paste():
    app = fakes.FakeGlance()
    flt = make_filter(app, max_image_size=str(len(BODY)))
    assert put(size=str(len(BODY))).get_response(flt).status_int == 204
    response = put(size=str(len(BODY) + 1),
                   stream=fakes.UntouchableInput()).get_response(flt)
    assert response.status_int == 413


def test_invalid_option_value_fails_at_load_time():
    with pytest.raises(ValueError):
        make_filter(fakes.FakeGlance(), max_image_size='-1')


def test_content_range_is_refused_on_plain_upload():
    app = fakes.FakeGlance()
    for size in (None, str(len(BODY))):
        response = put(size=size, headers={
            'Content-Range': 'bytes 0-9/%d' % len(BODY)},
            stream=fakes.UntouchableInput()).get_response(make_filter(app))
        assert response.status_int == 400
        assert 'Content-Range' in response.text
    assert app.calls == 0


def test_other_transfer_codings_are_refused():
    app = fakes.FakeGlance()
    response = put(size='5', chunked=True, headers={
        'Transfer-Encoding': 'gzip, chunked'},
        stream=fakes.UntouchableInput()).get_response(make_filter(app))
    assert response.status_int == 400
    assert app.calls == 0


def test_no_header_passes_through_unchanged():
    app = fakes.FakeGlance()
    request = put(chunked=True)
    before = dict(request.environ)
    assert request.get_response(make_filter(app)).status_int == 204
    for key, value in before.items():
        assert app.environ[key] is value
    assert 'sizeaware.expected_size' not in app.environ


@pytest.mark.parametrize('chunked, content_length, status', [
    (True, False, 411), (False, False, 411), (False, True, 204)])
def test_require_image_size(chunked, content_length, status):
    app = fakes.FakeGlance()
    request = put(body=b'' if status == 411 and not chunked else BODY,
                  chunked=chunked, content_length=content_length)
    response = request.get_response(
        make_filter(app, require_image_size='true'))
    assert response.status_int == status
    if status == 411:
        assert 'X-OpenStack-Image-Size' in response.text


@pytest.mark.parametrize('method, path', [
    ('GET', '/v2/images/%s/file' % IMAGE),
    ('POST', '/v2/images/%s/file' % IMAGE),
    ('PUT', '/v2/images/%s' % IMAGE),
    ('PUT', '/v2/images/%s/file/extra' % IMAGE),
    ('PUT', '/v1/images/%s/file' % IMAGE),
    ('PATCH', '/v2/images/%s/stage' % IMAGE),
])
def test_other_requests_are_untouched(method, path):
    app = fakes.FakeGlance()
    request = put(size='nonsense', path=path)
    request.method = method
    assert request.get_response(make_filter(app)).status_int == 204
    assert app.environ['HTTP_X_OPENSTACK_IMAGE_SIZE'] == 'nonsense'


@pytest.mark.parametrize('path', [
    '/v2/images/%s/stage' % IMAGE, '/v2/images/%s/file/' % IMAGE])
def test_stage_and_trailing_slash_are_covered(path):
    app = fakes.FakeGlance()
    response = put(size='abc', path=path).get_response(make_filter(app))
    assert response.status_int == 400


def test_script_name_prefix_is_not_part_of_the_match():
    app = fakes.FakeGlance()
    request = put(size='abc')
    request.environ['SCRIPT_NAME'] = '/image'
    assert request.get_response(make_filter(app)).status_int == 400


def test_one_log_line_with_request_id_and_sizes(caplog):
    app = fakes.FakeGlance()
    request = put(size=str(len(BODY) + 1), chunked=True)
    request.environ['openstack.request_id'] = 'req-abc123'
    with caplog.at_level(logging.INFO):
        response = request.get_response(make_filter(app))
    assert response.status_int == 400
    lines = [r.getMessage() for r in caplog.records
             if r.name == size_filter.__name__]
    assert len(lines) == 1
    assert 'req-abc123' in lines[0]
    assert IMAGE in lines[0]
    assert 'declared=%d' % (len(BODY) + 1) in lines[0]
    assert 'received=%d' % len(BODY) in lines[0]


def test_app_iter_of_overridden_response_is_closed():
    closed = []

    class Body(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        try:
            environ['wsgi.input'].read()
        except ValueError:
            pass
        start_response('204 No Content', [])
        return Body()

    response = put(size=str(len(BODY) - 1), chunked=True).get_response(
        make_filter(app))
    assert response.status_int == 400
    assert closed == [True]


@pytest.fixture
def fake_uwsgi(monkeypatch):
    """uwsgi's module exists only inside uwsgi; this plays its part."""
    module = types.ModuleType('uwsgi')
    monkeypatch.setitem(sys.modules, 'uwsgi', module)
    return module


@pytest.mark.parametrize('delta, status', [(0, 204), (1, 400), (-1, 400)])
def test_uwsgi_chunked_body_is_read_through_chunked_read(fake_uwsgi, delta,
                                                         status):
    chunks = [BODY[i:i + 4096] for i in range(0, len(BODY), 4096)]
    fake_uwsgi.chunked_read = fakes.ChunkSource(chunks)
    app = fakes.FakeGlance()
    request = put(size=str(len(BODY) + delta), chunked=True,
                  stream=fakes.UntouchableInput())
    del request.environ['wsgi.input_terminated']
    request.environ['uwsgi.version'] = b'2.0.30'
    response = request.get_response(make_filter(app))
    assert response.status_int == status
    if status == 204:
        assert app.body == BODY


def test_options_from_the_service_config_file(tmp_path):
    conf_file = tmp_path / 'svc.conf'
    conf_file.write_text('[sizeaware]\nmax_image_size = 10\n'
                         'require_image_size = true\n')
    flt = make_filter(fakes.FakeGlance(), oslo_config_project='svc',
                      oslo_config_file=str(conf_file))
    assert flt.max_image_size == 10
    assert flt.require_image_size is True
    flt = make_filter(fakes.FakeGlance(), oslo_config_project='svc',
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

    request = put(size=str(len(BODY)))
    assert request.get_response(make_filter(app)).status_int == 204
    (body_file, data), = seen
    assert type(body_file).__name__ == 'SizedBodyReader'
    assert data == BODY
