"""``sizeaware download`` (:class:`sizeaware.client.download.Download`)
against :class:`tests.unit.fakes.FakeGlance`, with no socket and no server
thread.

The client's own :class:`~sizeaware.client.connection.GlanceConnection`
and requests' session are used as they are; only the session's transport
is replaced by :class:`WSGITransport`, which calls the fake in the
requesting thread and hands its answer back as urllib3's response over the
``app_iter``: the client reads it as it reads a socket, ``raw.stream()``
and all. The transport also plays the network's faults, scripted per
request for the image's data: an answer cut after some bytes (a reset),
one that ends early under its ``Content-Length``, a status in place of the
answer. :class:`Validators` plays what sizeaware's download filter adds in
front of Glance: a strong ``ETag`` and ``If-Match``. The ``glance_app``
fixture fails a test that leaves an ``app_iter`` unclosed.
"""

import hashlib
import io
import os
import threading
import time
import urllib.parse

from keystoneauth1 import session as ks_session
import pytest
import requests
import urllib3

from sizeaware import resume
from sizeaware.client import connection
from sizeaware.client import download
from sizeaware.client import errors
from sizeaware.client import manifest
from sizeaware.client import state

IMAGE_ID = '6f1c2a77-0000-4000-8000-0000000000d1'
CHUNK = 64 * 1024
DATA = os.urandom(16 * CHUNK + 12345)
N = len(DATA)
COUNT = manifest.chunk_count(N, CHUNK)
ETAG = '"%s"' % hashlib.sha512(DATA).hexdigest()
ENDPOINT = 'http://glance.test'


def record(data=DATA, chunks=True):
    """The fake's image: its record, with the chunk manifest, and data."""
    image = {'status': 'active', 'size': len(data),
             'os_hash_algo': 'sha512',
             'os_hash_value': hashlib.sha512(data).hexdigest(),
             'checksum': hashlib.md5(data).hexdigest(),
             'updated_at': '2026-01-01T00:00:00Z', 'data': data,
             'piece': 40_000}
    if chunks:
        image.update(chunk_manifest(data).to_properties())
    return image


def chunk_manifest(data):
    """The manifest of ``data`` in chunks of :data:`CHUNK`."""
    made = manifest.Manifest(len(data), CHUNK)
    for index in range(made.count):
        start, stop = made.bounds(index)
        digest = made.new_hash()
        digest.update(data[start:stop])
        made.digests[index] = made.truncate(digest.digest())
    return made


class Body(io.RawIOBase):
    """An answer's body as the socket delivers it: the ``app_iter``'s
    pieces, then its end; with ``cut``, a reset after that many bytes,
    with ``short``, a clean end after that many. Closing it closes the
    ``app_iter``."""

    def __init__(self, app_iter, cut=None, short=None):
        super().__init__()
        self._app_iter = app_iter
        self._pieces = iter(app_iter)
        self._pending = b''
        self._sent = 0
        self._cut = cut
        self._short = short

    def readable(self):
        return True

    def readinto(self, buffer):
        limit = self._cut if self._cut is not None else self._short
        if limit is not None and self._sent >= limit:
            if self._cut is not None:
                raise ConnectionResetError(104, 'Connection reset by peer')
            return 0
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = piece
        count = min(len(buffer), len(self._pending))
        if limit is not None:
            count = min(count, limit - self._sent)
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self._sent += count
        return count

    def close(self):
        if not self.closed:
            close = getattr(self._app_iter, 'close', None)
            if close is not None:
                close()
        super().close()


class WSGITransport(requests.adapters.BaseAdapter):
    """requests' transport to a WSGI app, in the calling thread.

    ``faults`` is what each next request for the image's data meets
    instead of a plain answer: ``('cut', n)`` (a reset after ``n`` body
    bytes), ``('short', n)`` (the body ends after ``n``), ``('status',
    code)`` (an empty answer of that status), ``('refused',)`` (no
    connection), None (a plain answer) or a function, called before a
    plain answer is made. ``data_requests`` records the
    headers of every request for the data.
    """

    def __init__(self, app, faults=()):
        super().__init__()
        self.app = app
        self.faults = list(faults)
        self.data_requests = []
        self._lock = threading.Lock()

    def send(self, request, stream=False, timeout=None, verify=True,
             cert=None, proxies=None):
        url = urllib.parse.urlsplit(request.url)
        fault = None
        if url.path.endswith('/file'):
            with self._lock:
                self.data_requests.append(dict(request.headers))
                fault = self.faults.pop(0) if self.faults else None
        if callable(fault):
            fault, _ = None, fault()
        if fault and fault[0] == 'refused':
            raise requests.exceptions.ConnectionError('refused')
        if fault and fault[0] == 'status':
            return self._response(request, fault[1], [], Body([b'']))
        body = request.body or b''
        environ = {
            'REQUEST_METHOD': request.method,
            'PATH_INFO': urllib.parse.unquote(url.path),
            'QUERY_STRING': url.query, 'SERVER_NAME': url.hostname,
            'SERVER_PORT': str(url.port or 80),
            'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.version': (1, 0),
            'wsgi.url_scheme': url.scheme, 'wsgi.input': io.BytesIO(body),
            'wsgi.errors': io.StringIO(), 'wsgi.multithread': True,
            'wsgi.multiprocess': False, 'wsgi.run_once': False,
            'CONTENT_LENGTH': str(len(body))}
        for name, value in request.headers.items():
            key = name.upper().replace('-', '_')
            if key not in ('CONTENT_TYPE', 'CONTENT_LENGTH'):
                key = 'HTTP_' + key
            environ[key] = value
        started = []
        app_iter = self.app(environ, lambda status, headers, exc_info=None:
                            started.append((status, headers)))
        status, headers = started[-1]
        kind, count = fault if fault else (None, None)
        return self._response(request, int(status.split()[0]), headers,
                              Body(app_iter, cut=count if kind == 'cut'
                                   else None,
                                   short=count if kind == 'short' else None))

    def _response(self, request, status, headers, body):
        raw = urllib3.HTTPResponse(
            body=body, headers=headers, status=status,
            preload_content=False, decode_content=False,
            enforce_content_length=True, request_url=request.url)
        response = requests.Response()
        response.status_code = status
        response.headers = requests.structures.CaseInsensitiveDict(
            raw.headers)
        response.raw = raw
        response.url = request.url
        response.request = request
        response.connection = self
        response.encoding = requests.utils.get_encoding_from_headers(
            response.headers)
        return response

    def close(self):
        pass


class Validators:
    """What sizeaware's download filter adds in front of Glance: a strong
    ``ETag`` on the data's 200 and 206, and 412 to an ``If-Match`` that
    does not name it; ``ranges=False`` plays a server that ignores
    ``Range`` (it answers the whole image)."""

    def __init__(self, app, etag=ETAG, ranges=True):
        self.app = app
        self.etag = etag
        self.ranges = ranges

    def __call__(self, environ, start_response):
        if not environ['PATH_INFO'].endswith('/file'):
            return self.app(environ, start_response)
        if_match = environ.get('HTTP_IF_MATCH')
        if if_match is not None and if_match != self.etag:
            start_response('412 Precondition Failed',
                           [('Content-Length', '0')])
            return [b'']
        if not self.ranges:
            environ.pop('HTTP_RANGE', None)

        def with_etag(status, headers, exc_info=None):
            if status[:3] in ('200', '206') and self.etag:
                headers = headers + [('ETag', self.etag)]
            return start_response(status, headers, exc_info)

        return self.app(environ, with_etag)


def connect(app, faults=()):
    """The client's connection to ``app``, and its transport."""
    transport = WSGITransport(app, faults)
    session = requests.Session()
    session.mount(ENDPOINT, transport)
    conn = connection.GlanceConnection(
        ks_session.Session(session=session), ENDPOINT, authenticated=False)
    return conn, transport


@pytest.fixture
def glance(glance_app):
    """``make(image=None, faults=(), etag=ETAG, ranges=True)``: the fake
    Glance with one image (:func:`record`), its connection and transport;
    ``etag=None`` is Glance without the download filter."""
    def make(image=None, faults=(), etag=ETAG, ranges=True):
        app = glance_app(images={IMAGE_ID: image or record()})
        front = Validators(app, etag, ranges) if etag or not ranges else app
        conn, transport = connect(front, faults)
        return app, conn, transport
    return make


def no_wait(**_):
    return download.new_backoff(sleep=lambda seconds: None)


def run(conn, target, **kwargs):
    kwargs.setdefault('backoff', no_wait)
    kwargs.setdefault('log', lambda text: None)
    return download.Download(conn, IMAGE_ID, target, **kwargs).run()


def ranges_asked(transport):
    return [(h.get('Range'), h.get('If-Match'))
            for h in transport.data_requests]


def tail(start, stop=N):
    return 'bytes=%d-%d' % (start, stop - 1)


# -- whole and resumed downloads -----------------------------------------


@pytest.mark.parametrize('etag', [ETAG, None], ids=['filter', 'bare'])
def test_a_download_is_one_plain_get_then_verified_and_renamed(
        glance, tmp_path, etag):
    _, conn, transport = glance(etag=etag)
    target = tmp_path / 'disk.raw'
    result = run(conn, target)
    assert target.read_bytes() == DATA
    assert ranges_asked(transport) == [(None, None)]
    assert (result['fetched'], result['verified']) == (N, 'sha512')
    assert result['resumed_from'] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['disk.raw']


@pytest.mark.parametrize('kind', ['cut', 'short'])
def test_a_broken_answer_is_resumed_from_its_byte_pinned_to_the_etag(
        glance, tmp_path, kind):
    _, conn, transport = glance(faults=[(kind, 300_001), (kind, 7)])
    target = tmp_path / 'disk.raw'
    result = run(conn, target)
    assert target.read_bytes() == DATA
    assert ranges_asked(transport) == [
        (None, None), (tail(300_001), ETAG), (tail(300_008), ETAG)]
    assert result['fetched'] == N


def test_without_an_etag_the_record_is_compared_before_resuming(
        glance, tmp_path):
    app, conn, transport = glance(etag=None, faults=[('cut', 100_000)])
    run(conn, tmp_path / 'disk.raw')
    assert ranges_asked(transport) == [(None, None), (tail(100_000), None)]
    shown = [c for c in app.calls if not c.environ['PATH_INFO'].endswith(
        '/file')]
    assert len(shown) == 2  # the record, then again before the resume


def test_four_streams_each_resumed_where_it_broke(glance, tmp_path):
    _, conn, transport = glance(faults=[None, ('cut', 5000),
                                        ('cut', 70_000)])
    target = tmp_path / 'disk.raw'
    result = run(conn, target, parallel=4)
    assert target.read_bytes() == DATA
    asked = ranges_asked(transport)
    assert asked[0] == ('bytes=0-0', None)  # does it answer ranges?
    assert all(if_match == ETAG for _, if_match in asked[1:])
    assert len(asked) == 1 + 4 + 2
    assert result['fetched'] == N


@pytest.mark.parametrize('status', sorted(resume.RETRYABLE_STATUSES))
def test_retryable_statuses_are_asked_again(glance, tmp_path, status):
    _, conn, transport = glance(faults=[('cut', 1000), ('status', status)])
    run(conn, tmp_path / 'disk.raw')
    assert ranges_asked(transport)[1:] == [(tail(1000), ETAG)] * 2


@pytest.mark.parametrize('status', [501, 505, 404, 403, 416])
def test_other_statuses_end_the_download(glance, tmp_path, status):
    _, conn, transport = glance(faults=[('cut', 1000), ('status', status)])
    with pytest.raises(errors.Refused, match=str(status)):
        run(conn, tmp_path / 'disk.raw')
    assert len(transport.data_requests) == 2


def test_breaks_after_progress_never_spend_the_budget(glance, tmp_path):
    """More breaks than the budget of failures in a row, each after bytes
    arrived: the download goes on as long as it advances."""
    breaks = download.ATTEMPTS + 3
    _, conn, transport = glance(faults=[('cut', 10_000)] * breaks)
    result = run(conn, tmp_path / 'disk.raw')
    assert len(transport.data_requests) == breaks + 1
    assert result['fetched'] == N


def test_failures_in_a_row_without_a_byte_give_up(glance, tmp_path):
    faults = [('cut', 10_000)] + [('cut', 0), ('status', 503),
                                  ('refused',)] * 3
    _, conn, transport = glance(faults=faults)
    with pytest.raises(errors.TransferError,
                       match='after %d failed attempts' % download.ATTEMPTS):
        run(conn, tmp_path / 'disk.raw')
    assert len(transport.data_requests) == 1 + download.ATTEMPTS


# -- answers never spliced ---------------------------------------------------


def test_an_image_changed_mid_download_is_refused_and_removed(
        glance, tmp_path):
    _, conn, transport = glance()

    def replace():
        transport.app.etag = '"other"'

    transport.faults = [('cut', 100_000), replace]
    target = tmp_path / 'disk.raw'
    with pytest.raises(errors.ImageChanged, match='412'):
        run(conn, target)
    assert ranges_asked(transport)[1] == (tail(100_000), ETAG)
    assert list(tmp_path.iterdir()) == []


def test_a_200_to_a_range_is_never_spliced(glance, tmp_path):
    _, conn, transport = glance(faults=[('cut', 100_000)], ranges=False)
    logged = []
    target = tmp_path / 'disk.raw'
    result = run(conn, target, log=logged.append)
    assert target.read_bytes() == DATA
    assert ranges_asked(transport) == [
        (None, None), (tail(100_000), ETAG), (None, ETAG)]
    assert any('not spliced' in line for line in logged), logged
    assert result['fetched'] == 100_000 + N


# -- what a rerun keeps ------------------------------------------------------


def partial(target, chunks, garbage=(), half=None):
    """The partial file a killed run left: the chunks ``chunks`` written,
    ``garbage`` ones holding other bytes, ``half`` written in part, the
    rest never written (a hole). No state file."""
    part, _ = download.part_paths(target)
    with open(part, 'wb') as handle:
        handle.truncate(N)
        for index in chunks:
            handle.seek(index * CHUNK)
            handle.write(DATA[index * CHUNK:(index + 1) * CHUNK])
        for index in garbage:
            handle.seek(index * CHUNK)
            handle.write(os.urandom(CHUNK))
        if half is not None:
            handle.seek(half * CHUNK)
            handle.write(DATA[half * CHUNK:half * CHUNK + CHUNK // 2])
    return part


def save_state(target, conn, image, done):
    """The state file a run of the same download saved, listing ``done``
    units of :data:`CHUNK`."""
    _, state_path = download.part_paths(target)
    state.save(state_path, {'identity': {
        'image_id': IMAGE_ID, 'endpoint': conn.endpoint, 'size': N,
        'os_hash_value': image['os_hash_value'],
        'checksum': image['checksum'], 'updated_at': image['updated_at'],
        'unit': CHUNK}, 'etag': ETAG, 'done': list(done)})


def asked_chunks(transport):
    """The chunks each ranged request for data asked for (not the probe
    of four streams: does the server answer ranges?)."""
    asked = []
    for headers in transport.data_requests:
        if headers['Range'] == 'bytes=0-0':
            continue
        first, last = map(int, headers['Range'][6:].split('-'))
        asked.append((first // CHUNK, last // CHUNK))
    return asked


@pytest.mark.parametrize('parallel', [1, 4])
def test_a_rerun_keeps_every_chunk_that_matches_its_digest(
        glance, tmp_path, parallel):
    """The run before was killed before it ever saved its state: the
    chunks of its partial file that match their digests are kept, the
    others (never written, written in part, overwritten) fetched."""
    target = tmp_path / 'disk.raw'
    partial(target, chunks=[0, 1, 2, 8, 9, 16], garbage=[3], half=10)
    _, conn, transport = glance()
    result = run(conn, target, parallel=parallel)
    assert target.read_bytes() == DATA
    kept = [0, 1, 2, 8, 9, 16]
    expected = N - sum(min(CHUNK, N - i * CHUNK) for i in kept)
    assert result['resumed_from'] == N - expected
    assert result['fetched'] == expected
    asked = asked_chunks(transport)
    if parallel == 1:
        assert asked == [(3, 7), (10, 15)]
    fetched = {i for first, last in asked for i in range(first, last + 1)}
    assert fetched.isdisjoint(kept)


def test_the_digests_overrule_a_state_file(glance, tmp_path):
    """A state file that lists a chunk whose bytes are wrong (another
    writer, a disk fault) does not keep it."""
    target = tmp_path / 'disk.raw'
    partial(target, chunks=range(COUNT), garbage=[5])
    _, conn, transport = glance()
    save_state(target, conn, record(), range(COUNT))
    result = run(conn, target)
    assert target.read_bytes() == DATA
    assert ranges_asked(transport) == [(tail(5 * CHUNK, 6 * CHUNK), ETAG)]
    assert result['fetched'] == CHUNK


def test_without_chunk_digests_the_state_file_says_what_is_kept(
        glance, tmp_path):
    target = tmp_path / 'disk.raw'
    partial(target, chunks=range(4))
    _, conn, transport = glance(image=record(chunks=False))
    # No state file: nothing can be trusted, all is fetched.
    assert run(conn, target, unit=CHUNK)['fetched'] == N
    partial(target, chunks=range(4))
    save_state(target, conn, record(chunks=False), [0, 1, 2])
    result = run(conn, target, unit=CHUNK)
    assert result['fetched'] == N - 3 * CHUNK
    assert target.read_bytes() == DATA


def test_chunks_in_holes_are_compared_without_being_read(tmp_path):
    data = bytes(3 * CHUNK) + DATA[:CHUNK] + bytes(CHUNK // 2)
    made = chunk_manifest(data)
    path = tmp_path / 'part'
    with open(path, 'wb') as handle:
        handle.truncate(len(data))
        handle.seek(3 * CHUNK)
        handle.write(DATA[:CHUNK])
    fd = os.open(path, os.O_RDONLY)
    try:
        assert manifest.matching_chunks(made, fd) == {0, 1, 2, 3, 4}
        os.ftruncate(os.open(path, os.O_RDWR), len(data) - 1)
        assert manifest.matching_chunks(made, fd) == {0, 1, 2, 3}
    finally:
        os.close(fd)


# -- the first error wins ----------------------------------------------------


def failing_pipe():
    """A hash pipe whose work has failed."""
    def work(position, piece):
        raise RuntimeError('hashing failed')

    pipe = download._HashPipe(work)
    pipe.put(0, b'x')
    for _ in range(5000):
        if pipe.error is not None:
            return pipe
        time.sleep(0.001)
    raise AssertionError('the work never failed')


@pytest.mark.parametrize('error', [
    download.RangesIgnored('a 200 to a range'),
    errors.ImageChanged('the image changed')])
def test_closing_the_pipe_never_hides_the_error_in_flight(error):
    pipe = failing_pipe()
    with pytest.raises(type(error)) as caught:
        with download.first_error_wins(pipe.close):
            raise error
    assert caught.value is error
    assert 'hashing failed' in ' '.join(caught.value.__notes__)


def test_a_close_that_fails_alone_raises():
    pipe = failing_pipe()
    with pytest.raises(RuntimeError, match='hashing failed'):
        with download.first_error_wins(pipe.close):
            pass


def test_a_hashing_failure_ends_the_download(glance, tmp_path,
                                             monkeypatch):
    def digest(self, position, piece, verifier, held):
        raise RuntimeError('hashing failed')

    monkeypatch.setattr(download.Download, '_digest', digest)
    _, conn, _ = glance()
    with pytest.raises(RuntimeError, match='hashing failed'):
        run(conn, tmp_path / 'disk.raw')
