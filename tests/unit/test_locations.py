"""Handing a store-native session's location to Glance, and the checks
its data passes as stored.

The request to Glance goes to a real HTTP server on loopback that records
what it was sent; the checks read a real session of a spool.
"""

import hashlib
import http.server
import json
import threading

from oslo_config import cfg
import pytest

from sizeaware import exceptions
from sizeaware.sessions import checks
from sizeaware.sessions import locations
from sizeaware.sessions.storage import spool as spools

IMAGE = '6f1c2a77-0000-4000-8000-000000000002'
OWNER = ('p1', 'u1')
QCOW2_HEADER = b'QFI\xfb' + b'\x00\x00\x00\x03' + bytes(504)


class _Glance(http.server.BaseHTTPRequestHandler):
    """Records each request and answers what the test says."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        self.server.seen.append((self.path, dict(self.headers),
                                 json.loads(body)))
        status = self.server.status
        self.send_response(status)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'{}')

    def log_message(self, *args):
        pass


@pytest.fixture
def glance():
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Glance)
    server.seen, server.status = [], 202
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _locations(glance):
    conf = cfg.ConfigOpts()
    conf([], project='sizeaware-test')
    return locations.Locations(
        conf, 'http://127.0.0.1:%d' % glance.server_address[1])


def test_the_callers_identity_goes_with_the_service_role(glance):
    environ = {'HTTP_X_AUTH_TOKEN': 'user-token',
               'HTTP_X_PROJECT_ID': 'p1', 'HTTP_X_ROLES': 'member',
               'HTTP_X_SERVICE_ROLES': 'forged',
               'openstack.request_id': 'req-1'}
    status, _ = _locations(glance).add(environ, IMAGE, 'rbd://f/p/i/snap')
    assert status == 202
    ((path, headers, body),) = glance.seen
    assert path == '/v2/images/%s/locations' % IMAGE
    assert body == {'url': 'rbd://f/p/i/snap'}
    assert headers['X-Auth-Token'] == 'user-token'
    assert headers['X-Project-Id'] == 'p1'
    assert headers['X-Roles'] == 'member'
    assert headers['X-OpenStack-Request-ID'] == 'req-1'
    # Without a service user the request names the role (which only a
    # pipeline without authtoken believes), never what the caller sent.
    assert headers['X-Service-Roles'] == 'service'
    assert 'X-Service-Token' not in headers


def test_glances_answer_is_returned(glance):
    glance.status = 403
    status, text = _locations(glance).add({}, IMAGE, 'rbd://f/p/i/snap')
    assert (status, text) == (403, '{}')


def test_no_answer_is_glance_unreachable(glance):
    conf = cfg.ConfigOpts()
    conf([], project='sizeaware-test')
    glance.shutdown()
    glance.server_close()
    with pytest.raises(exceptions.GlanceUnreachable):
        locations.Locations(conf, 'http://127.0.0.1:%d'
                            % glance.server_address[1]).add(
            {}, IMAGE, 'rbd://f/p/i/snap')


@pytest.mark.parametrize('states, verdict', [
    ([('queued', True), 'active'], True),
    # The task failed: queued again, its lock gone.
    ([('queued', True), 'queued'], False),
    ([('queued', True)] * 50, None),
])
def test_wait_active(states, verdict):
    now = [0.0]
    answers = iter(states)

    def get_image():
        state = next(answers)
        if isinstance(state, tuple):
            return {'status': state[0], 'os_glance_import_task': 'task'}
        return {'status': state}
    taken, _ = locations.wait_active(
        get_image, timeout=1.0, interval=0.1, clock=lambda: now[0],
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds))
    assert taken is verdict


@pytest.fixture
def spool(tmp_path):
    return spools.Spool(str(tmp_path / 'spool'))


def _complete(spool, data, sha256=None):
    session = spool.create(IMAGE, 'file', OWNER, len(data), sha256)
    with open(session.path + '/data', 'r+b') as f:
        f.write(data)
    session.commit(0, len(data), crc=0)
    return session


def test_stored_data_of_another_size_is_refused(spool):
    session = _complete(spool, b'x' * 1000)
    with open(session.path + '/data', 'ab') as f:
        f.write(b'more')
    with pytest.raises(exceptions.ImageRefused, match='1004 bytes'):
        checks.judge_stored(session, 'raw')


def test_stored_format_is_judged_on_its_first_bytes(spool):
    data = QCOW2_HEADER + bytes(checks.STORED_HEAD_BYTES)
    session = _complete(spool, data)
    with pytest.raises(exceptions.ImageRefused, match='qcow2'):
        checks.judge_stored(session, 'raw')
    session.close()


def test_a_declared_sha256_reads_all_of_it(spool):
    data = bytes(range(256)) * (checks.STORED_HEAD_BYTES // 128)
    session = _complete(spool, data, sha256=hashlib.sha256(
        data[:-1] + b'!').hexdigest())
    with pytest.raises(exceptions.ImageRefused, match='sha256'):
        checks.judge_stored(session, 'raw')
    session.close()
    good = spools.Spool(spool.directory + '-2')
    checks.judge_stored(_complete(good, data, hashlib.sha256(
        data).hexdigest()), 'raw')
