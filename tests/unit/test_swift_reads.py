"""``sizeaware_swift``'s reads against a small object server on loopback.

The driver's request function (``_ObjectRanges``) runs with the real
python-swiftclient, requests and urllib3 underneath, against an HTTP
server in a thread that answers as Swift's proxy does for one object: its
ETag, ``Range`` with a 206 and ``Content-Range``, ``If-Match`` with 412,
and faults scripted per request (a body cut after some bytes, a 503, an
object replaced). The server records every request, so the tests see what
the driver asked for. The read through Glance on a real Swift, with a
fault proxy in between, is in ``tests/functional/test_swift_reads.py``.
"""

import hashlib
import http.server
import os
import re
import socket
import threading
import time
import types

from glance_store import exceptions as store_exceptions
import pytest

from sizeaware import exceptions
from sizeaware.store import restart
from sizeaware.store import swift

DATA = os.urandom(300_007)
N = len(DATA)


class ObjectServer(http.server.ThreadingHTTPServer):
    """One object at ``/v1/AUTH_test/c/obj``; ``faults`` is a list of what
    each next GET does instead of answering plainly: ``('cut', n)`` sends
    ``n`` body bytes then closes, ``('status', code)`` answers ``code``,
    ``('silent', seconds)`` answers nothing for that long then closes,
    ``('replace', data)`` replaces the object first."""

    daemon_threads = True

    def __init__(self):
        super().__init__(('127.0.0.1', 0), Handler)
        self.data = DATA
        self.faults = []
        self.requests = []
        self.url = 'http://127.0.0.1:%d/v1/AUTH_test' % self.server_port

    @property
    def etag(self):
        return hashlib.md5(self.data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append(
            {k.lower(): v for k, v in self.headers.items()})
        fault = server.faults.pop(0) if server.faults else None
        if fault and fault[0] == 'replace':
            server.data = fault[1]
            fault = None
        if fault and fault[0] == 'status':
            return self._answer(fault[1], b'', {})
        if fault and fault[0] == 'silent':
            time.sleep(fault[1])
            self.close_connection = True
            return
        if self.path != '/v1/AUTH_test/c/obj':
            return self._answer(404, b'Not Found', {})
        data, etag = server.data, server.etag
        if_match = self.headers.get('If-Match')
        if if_match is not None and if_match.strip('"') != etag:
            return self._answer(412, b'', {'Etag': etag})
        status, start, end = 200, 0, len(data)
        match = re.fullmatch(r'bytes=(\d+)-(\d*)',
                             self.headers.get('Range', ''))
        if match:
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)) + 1, len(data))
            status = 206
        body = data[start:end]
        headers = {'Etag': etag}
        if status == 206:
            headers['Content-Range'] = 'bytes %d-%d/%d' % (start, end - 1,
                                                           len(data))
        cut = fault[1] if fault and fault[0] == 'cut' else None
        self._answer(status, body, headers, cut)

    def _answer(self, status, body, headers, cut=None):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    srv = ObjectServer()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,),
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Manager:
    """glance_store's connection manager, as the driver uses it."""

    def __init__(self, url):
        self.url = url
        self.exits = 0

    def get_connection(self):
        return types.SimpleNamespace(url=self.url, token='tok')

    def __exit__(self, *exc):
        self.exits += 1


def read(server, offset=0, length=None, retries=3, piece=10_000):
    """A reader of the object as the driver's ``get()`` makes it, and its
    manager; the bytes it delivers, read in ``piece``-byte reads."""
    policy = restart.Policy(read_retries=retries, retry_backoff=0,
                            connect_timeout=2, read_timeout=2,
                            stall_timeout=2)
    manager = Manager(server.url)
    store = types.SimpleNamespace(cacert=None, insecure=False)
    location = types.SimpleNamespace(container='c', obj='obj')
    reader = swift._ManagedReader(
        manager, swift._ObjectRanges(store, manager, location, policy),
        offset, length, policy=policy, broken=swift.BROKEN,
        name='Swift object c/obj')
    return reader, manager


def read_all(reader, piece=10_000):
    got = bytearray()
    while data := reader.read(piece):
        got += data
    reader.close()
    return bytes(got)


def test_whole_read_is_one_plain_get(server):
    reader, manager = read(server)
    assert read_all(reader) == DATA
    assert len(server.requests) == 1
    assert 'range' not in server.requests[0]
    assert 'if-match' not in server.requests[0]
    assert server.requests[0]['x-auth-token'] == 'tok'
    assert manager.exits == 1


def test_ranged_read_asks_for_exactly_the_range(server):
    reader, _ = read(server, offset=1000, length=5000)
    assert read_all(reader) == DATA[1000:6000]
    assert server.requests[0]['range'] == 'bytes=1000-5999'


@pytest.mark.parametrize('cuts', [[1], [5000, 70_000, 1], [0]])
def test_cut_bodies_restart_from_the_exact_byte_pinned_to_the_etag(
        server, cuts):
    server.faults = [('cut', n) for n in cuts]
    reader, _ = read(server)
    assert read_all(reader) == DATA
    assert len(server.requests) == len(cuts) + 1
    position = 0
    for cut, request in zip(cuts, server.requests[1:]):
        position += cut
        assert request['range'] == 'bytes=%d-%d' % (position, N - 1)
        assert request['if-match'] == server.etag


def test_a_503_is_retried(server):
    server.faults = [('cut', 100), ('status', 503)]
    reader, _ = read(server)
    assert read_all(reader) == DATA
    assert len(server.requests) == 3


def test_spent_retries_raise_never_end_short(server):
    # A break, then restarts that break before their first byte.
    server.faults = [('cut', 100)] + [('cut', 0)] * 3
    reader, manager = read(server, retries=3)
    with pytest.raises(exceptions.BackendReadFailed):
        read_all(reader)
    assert len(server.requests) == 4
    reader.close()
    assert manager.exits == 1


def test_a_replaced_object_is_refused_not_spliced(server):
    server.faults = [('cut', 100), ('replace', os.urandom(N))]
    reader, _ = read(server)
    with pytest.raises(exceptions.BackendObjectChanged):
        read_all(reader)
    assert server.requests[1]['if-match'] == hashlib.md5(DATA).hexdigest()


def test_a_missing_object_is_not_found_and_lets_the_manager_go(server):
    manager = Manager(server.url)
    policy = restart.Policy(read_retries=1, retry_backoff=0)
    location = types.SimpleNamespace(container='c', obj='gone')
    with pytest.raises(store_exceptions.NotFound):
        swift._ManagedReader(
            manager, swift._ObjectRanges(
                types.SimpleNamespace(cacert=None, insecure=False), manager,
                location, policy), policy=policy, broken=swift.BROKEN)
    assert manager.exits == 1


class Reads(swift._RestartingReads):
    """The driver's ``get()`` on a stand-in for glance_store's store: the
    connection manager and the read options are the test's."""

    cacert, insecure = None, False

    def __init__(self, url, **options):
        self.url = url
        self.managers = []
        self.options = types.SimpleNamespace(**dict(dict(
            read_retries=2, retry_backoff=0, connect_timeout=1,
            read_timeout=0.3, stall_timeout=1), **options))

    def is_capable(self, *capabilities):
        return True

    def get_manager(self, store_location, context=None, allow_reauth=False):
        self.managers.append(Manager(self.url))
        return self.managers[-1]

    def _read_conf(self):
        return self.options


LOCATION = types.SimpleNamespace(
    store_location=types.SimpleNamespace(container='c', obj='obj'))


def refusing_url():
    """A URL on loopback where nothing listens."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    return 'http://127.0.0.1:%d/v1/AUTH_test' % port


@pytest.mark.parametrize('fault', [('status', 503), ('status', 500),
                                   ('silent', 1.0), 'refused'])
def test_a_first_read_never_answered_is_glances_503(server, fault):
    """Swift refusing connections, answering 5xx or nothing at all until
    the retries are spent: ``RemoteServiceUnavailable``, which Glance
    answers with 503 (anything else escapes as a 500), as the S3 and HTTP
    drivers do."""
    if fault == 'refused':
        store = Reads(refusing_url())
    else:
        server.faults = [fault] * 3
        store = Reads(server.url)
    with pytest.raises(store_exceptions.RemoteServiceUnavailable,
                       match='after 2 retries'):
        store.get(LOCATION)
    if fault != 'refused':
        assert len(server.requests) == 3
    assert [m.exits for m in store.managers] == [1]


def test_the_drivers_get_reads_whole_after_a_first_503(server):
    server.faults = [('status', 503)]
    store = Reads(server.url)
    data, size = store.get(LOCATION, offset=10, chunk_size=20_000)
    assert size == 20_000
    assert b''.join(data) == DATA[10:20_010]
    assert [m.exits for m in store.managers] == [1]
