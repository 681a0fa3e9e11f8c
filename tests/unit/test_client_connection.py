"""The image API of the transfer client's connection: what each call sends
and what it makes of the answer.

Requests go through a real keystoneauth1 session and requests' own
preparation of the request (framing included); a transport adapter mounted
on the session takes the place of the network, records what would be sent
and answers from a script. No server, no thread.
"""

import io
import json

from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import pytest
import requests
from requests import adapters
from requests import structures

from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import retry

URL = 'http://glance.test:9292'


class ScriptedAdapter(adapters.BaseAdapter):
    """Answers requests from ``script`` (``(status, body)`` pairs, a body
    a dict for JSON or bytes) and keeps what was sent in :attr:`sent`:
    ``(method, url, headers, body bytes)``, the body read as a connection
    reads it."""

    def __init__(self, script):
        super().__init__()
        self.script = list(script)
        self.sent = []

    def send(self, request, **kwargs):
        body = request.body
        if hasattr(body, 'read'):
            body = body.read()
        elif body is not None and not isinstance(body, (bytes, str)):
            body = b''.join(body)
        if isinstance(body, str):
            body = body.encode()
        self.sent.append((request.method, request.url,
                          dict(request.headers), body))
        status, payload = self.script.pop(0)
        response = requests.Response()
        response.status_code = status
        response.request = request
        response.url = request.url
        response.headers = structures.CaseInsensitiveDict()
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
            response.headers['Content-Type'] = 'application/json'
        response._content = payload or b''
        return response

    def close(self):
        pass


def scripted(*script, headers=None):
    """A connection whose requests ``script`` answers, and its adapter."""
    session = ks_session.Session(auth=noauth.NoAuth())
    adapter = ScriptedAdapter(script)
    session.session.mount('http://', adapter)
    conn = connection.GlanceConnection(session, URL + '/v2',
                                       headers or {'X-Tenant-Id': 'p'},
                                       authenticated=False)
    return conn, adapter


def test_create_image_posts_the_properties_and_returns_the_record():
    conn, adapter = scripted((201, {'id': 'i1', 'status': 'queued'}))
    assert conn.create_image(name='x', disk_format='raw') == {
        'id': 'i1', 'status': 'queued'}
    ((method, url, headers, body),) = adapter.sent
    assert (method, url) == ('POST', URL + '/v2/images')
    assert headers['Content-Type'] == 'application/json'
    assert headers['X-Tenant-Id'] == 'p'
    assert json.loads(body) == {'name': 'x', 'disk_format': 'raw'}


def test_a_refused_create_raises():
    conn, _ = scripted((403, b'Forbidden'))
    with pytest.raises(errors.Refused) as caught:
        conn.create_image(name='x')
    assert caught.value.status == 403


@pytest.mark.parametrize('status', [204, 404])
def test_deleting_an_image_or_one_already_gone(status):
    conn, adapter = scripted((status, b''))
    conn.delete_image('i1')
    assert adapter.sent[0][:2] == ('DELETE', URL + '/v2/images/i1')


def test_a_failed_delete_raises():
    conn, _ = scripted((500, b'oops'))
    with pytest.raises(errors.Transient):
        conn.delete_image('i1')


def test_put_data_of_bytes_declares_the_size():
    conn, adapter = scripted((204, b''))
    response = conn.put_data('i1', b'abcdef', size=6)
    assert response.status_code == 204
    ((method, url, headers, body),) = adapter.sent
    assert (method, url) == ('PUT', URL + '/v2/images/i1/file')
    assert headers['Content-Type'] == 'application/octet-stream'
    assert headers['Content-Length'] == '6'
    assert headers['X-OpenStack-Image-Size'] == '6'
    assert 'Transfer-Encoding' not in headers
    assert body == b'abcdef'


def test_put_data_of_a_file_has_its_length_from_its_position(tmp_path):
    path = tmp_path / 'image'
    path.write_bytes(b'0123456789')
    conn, adapter = scripted((204, b''))
    with open(path, 'rb') as handle:
        handle.seek(4)
        conn.put_data('i1', handle, target='stage')
    ((method, url, headers, body),) = adapter.sent
    assert url == URL + '/v2/images/i1/stage'
    assert headers['Content-Length'] == '6'
    assert 'Transfer-Encoding' not in headers
    assert 'X-OpenStack-Image-Size' not in headers
    assert body == b'456789'


def test_put_data_of_an_iterator_is_chunked():
    conn, adapter = scripted((204, b''))
    conn.put_data('i1', iter([b'ab', b'cd']), size='+4',
                  headers={'X-Extra': '1'}, version='v2.1')
    ((method, url, headers, body),) = adapter.sent
    assert url == URL + '/v2.1/images/i1/file'
    assert headers['Transfer-Encoding'] == 'chunked'
    assert 'Content-Length' not in headers
    assert headers['X-OpenStack-Image-Size'] == '+4'
    assert headers['X-Extra'] == '1'
    assert body == b'abcd'


@pytest.mark.parametrize('status', [400, 409, 413, 500])
def test_put_data_returns_a_refusal_for_the_caller_to_judge(status):
    conn, _ = scripted((status, b'no'))
    assert conn.put_data('i1', io.BytesIO(b'x')).status_code == status


def test_import_image_names_the_method_and_returns_the_answer():
    conn, adapter = scripted((409, b'nothing staged'), (202, b''))
    assert conn.import_image('i1').status_code == 409
    assert conn.import_image('i1', 'web-download').status_code == 202
    bodies = [json.loads(sent[3]) for sent in adapter.sent]
    assert bodies == [{'method': {'name': 'glance-direct'}},
                      {'method': {'name': 'web-download'}}]
    assert adapter.sent[0][1] == URL + '/v2/images/i1/import'


def test_wait_for_status_polls_until_the_status_comes():
    conn, adapter = scripted((200, {'status': 'importing'}),
                             (200, {'status': 'importing'}),
                             (200, {'status': 'active', 'size': 3}))
    image = conn.wait_for_status('i1', ('active', 'killed'), interval=0)
    assert image == {'status': 'active', 'size': 3}
    assert len(adapter.sent) == 3


def test_wait_for_status_gives_up_after_the_timeout():
    conn, _ = scripted(*[(200, {'status': 'saving'})] * 3)
    with pytest.raises(errors.TransferError) as caught:
        conn.wait_for_status('i1', 'active', timeout=0, interval=0)
    assert 'stayed saving' in str(caught.value)


def test_wait_for_image_polls_until_the_predicate_holds():
    conn, adapter = scripted((200, {'status': 'saving'}),
                             (200, {'status': 'queued'}))
    image = conn.wait_for_image('i1', lambda i: i['status'] != 'saving',
                                interval=0)
    assert image == {'status': 'queued'}
    assert len(adapter.sent) == 2


def test_wait_for_image_tries_failures_again_with_its_backoff():
    """A 5xx and a refused connection are tried again within the backoff's
    limit; without a backoff they raise."""
    class Refusing(ScriptedAdapter):
        def send(self, request, **kwargs):
            if self.script[0] is None:
                self.script.pop(0)
                raise requests.exceptions.ConnectionError('refused')
            return super().send(request, **kwargs)
    conn, _ = scripted()
    adapter = Refusing([(503, b'busy'), None, (200, {'status': 'active'})])
    conn.session.session.mount('http://', adapter)
    waits = []
    backoff = retry.Backoff(attempts=2, sleep=waits.append)
    assert conn.wait_for_image('i1', lambda i: True, interval=0,
                               backoff=backoff) == {'status': 'active'}
    assert len(waits) == 2
    conn, _ = scripted((503, b'busy'))
    with pytest.raises(errors.Transient):
        conn.wait_for_image('i1', lambda i: True, interval=0)


def test_a_predicate_that_raises_ends_the_wait():
    conn, adapter = scripted((200, {'status': 'killed'}))

    def done(image):
        raise errors.TransferError('image is %s' % image['status'])
    with pytest.raises(errors.TransferError, match='image is killed'):
        conn.wait_for_image('i1', done, interval=0)
    assert len(adapter.sent) == 1


def test_a_record_that_is_not_json_is_a_transfer_error():
    conn, _ = scripted((200, b'<html>a proxy</html>'))
    with pytest.raises(errors.TransferError) as caught:
        conn.get_image('i1')
    assert 'GET image i1 answered 200 with a body that is not JSON' in str(
        caught.value)


def test_request_raises_nothing_for_a_status():
    conn, _ = scripted((503, b'busy'))
    assert conn.request('GET', '/v2/images').status_code == 503
