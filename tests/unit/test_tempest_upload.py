"""The tempest plugin's upload helper: what it sends through GlanceConnection
and which tempest.lib exception each answer raises."""

import json

import pytest
import requests
from tempest.lib import exceptions as lib_exc
from tempest.lib.common import rest_client
import urllib3

from sizeaware.client import connection
from sizeaware_tempest_plugin import upload


def _response(status, body=b'', headers=None):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = body
    return response


@pytest.mark.parametrize('status, error', sorted(upload.ERRORS.items()))
def test_each_error_status_raises_tempests_exception(status, error):
    response = _response(status, b'refused', {'Content-Type': 'text/plain'})
    with pytest.raises(error) as info:
        upload.raise_for_status(response)
    assert type(info.value) is error
    assert info.value.resp is response
    assert info.value.resp_body == 'refused'


def test_the_size_filter_answers_map_as_the_plugin_tests_expect():
    assert upload.ERRORS[400] is lib_exc.BadRequest
    assert upload.ERRORS[413] is lib_exc.OverLimit


def test_a_json_error_body_is_parsed():
    document = {'message': 'too big'}
    response = _response(413, json.dumps(document).encode(),
                         {'Content-Type': 'application/json; charset=UTF-8'})
    with pytest.raises(lib_exc.OverLimit) as info:
        upload.raise_for_status(response)
    assert info.value.resp_body == document


def test_413_with_retry_after_is_a_rate_limit():
    response = _response(413, b'slow down', {'Retry-After': '5'})
    with pytest.raises(lib_exc.RateLimitExceeded):
        upload.raise_for_status(response)


@pytest.mark.parametrize('status', [402, 405, 411, 418, 429, 502, 503])
def test_other_error_statuses_are_unexpected(status):
    with pytest.raises(lib_exc.UnexpectedResponseCode) as info:
        upload.raise_for_status(_response(status, b'no'))
    assert str(status) in str(info.value)


@pytest.mark.parametrize('status', [200, 201, 204, 301, 399])
def test_no_error_below_400(status):
    upload.raise_for_status(_response(status))


class RecordingAdapter(requests.adapters.BaseAdapter):
    """Answers every request with ``status``; keeps what was sent."""

    def __init__(self, status):
        super().__init__()
        self.status = status
        self.sent = []

    def send(self, request, **kwargs):
        chunks = list(request.body)
        self.sent.append({'method': request.method, 'url': request.url,
                          'headers': dict(request.headers),
                          'chunks': chunks, 'verify': kwargs['verify'],
                          'timeout': kwargs['timeout'],
                          'proxies': kwargs['proxies']})
        response = _response(self.status, b'', {'Content-Type': 'text/plain'})
        response.request = request
        response.url = request.url
        return response

    def close(self):
        pass


class FakePool:
    def __init__(self, proxy=None, **connection_pool_kw):
        if proxy is not None:
            self.proxy = urllib3.util.parse_url(proxy)
        self.connection_pool_kw = connection_pool_kw


class FakeImagesClient:
    """What the helper reads of tempest's ``ImagesClient``."""
    base_url = 'https://glance.example/image/v2'
    token = 'a-token'
    expected_success = rest_client.RestClient.expected_success

    def __init__(self, dscv=False, proxy=None, **connection_pool_kw):
        self.dscv = dscv
        self.http_obj = FakePool(proxy, **connection_pool_kw)


@pytest.fixture
def adapter(monkeypatch):
    adapter = RecordingAdapter(204)
    # requests would replace verify=True by a bundle these name, and add
    # the proxies these name.
    for name in ('REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'https_proxy',
                 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)

    class Session(requests.Session):
        def __init__(self):
            super().__init__()
            self.mount('https://', adapter)

    monkeypatch.setattr(upload.requests, 'Session', Session)
    return adapter


def test_put_sends_the_token_and_the_headers_in_64_kib_chunks(adapter):
    data = bytes(range(256)) * 1024 + b'tail'
    response = upload.put_image_data(
        FakeImagesClient(), 'an-image', data, target='stage',
        image_size=len(data), headers={'X-Extra': 'yes'})
    assert response.status_code == 204
    (sent,) = adapter.sent
    assert sent['method'] == 'PUT'
    assert sent['url'] == (
        'https://glance.example/image/v2/images/an-image/stage')
    assert sent['headers']['X-Auth-Token'] == 'a-token'
    assert sent['headers']['X-OpenStack-Image-Size'] == str(len(data))
    assert sent['headers']['Content-Type'] == 'application/octet-stream'
    assert sent['headers']['X-Extra'] == 'yes'
    assert sent['headers']['Transfer-Encoding'] == 'chunked'
    assert [len(c) for c in sent['chunks']] == [upload.CHUNK_SIZE] * 4 + [4]
    assert b''.join(sent['chunks']) == data
    assert sent['verify'] is True


def test_put_without_a_size_sends_no_size_header(adapter):
    upload.put_image_data(FakeImagesClient(), 'an-image', b'x')
    (sent,) = adapter.sent
    assert sent['url'].endswith('/v2/images/an-image/file')
    assert 'X-OpenStack-Image-Size' not in sent['headers']


@pytest.mark.parametrize('client, verify', [
    (FakeImagesClient(dscv=True, ca_certs='/etc/ca.pem',
                      cert_reqs='CERT_NONE'), False),
    (FakeImagesClient(ca_certs='/etc/ca.pem', cert_reqs='CERT_REQUIRED'),
     '/etc/ca.pem'),
    (FakeImagesClient(), True),
])
def test_put_verifies_tls_as_the_images_client_does(adapter, client, verify):
    upload.put_image_data(client, 'an-image', b'x')
    assert adapter.sent[0]['verify'] == verify


def test_put_goes_through_the_images_clients_proxy(adapter):
    upload.put_image_data(
        FakeImagesClient(proxy='http://proxy.example:3128'), 'an-image', b'x')
    assert adapter.sent[0]['proxies']['https'] == 'http://proxy.example:3128'


def test_put_without_a_proxy_goes_direct(adapter):
    upload.put_image_data(FakeImagesClient(), 'an-image', b'x')
    assert not adapter.sent[0]['proxies'].get('https')


def test_put_waits_as_long_as_the_images_client(adapter):
    upload.put_image_data(FakeImagesClient(timeout=300), 'an-image', b'x')
    assert adapter.sent[0]['timeout'] == (300, 300)


def test_put_without_a_client_timeout_keeps_the_connections_own(adapter):
    upload.put_image_data(FakeImagesClient(), 'an-image', b'x')
    assert adapter.sent[0]['timeout'] == (connection.CONNECT_TIMEOUT,
                                          connection.READ_TIMEOUT)


def test_put_raises_tempests_exception_for_an_error(adapter):
    adapter.status = 400
    with pytest.raises(lib_exc.BadRequest):
        upload.put_image_data(FakeImagesClient(), 'an-image', b'x',
                              image_size=2)


def test_put_checks_the_success_status(adapter):
    adapter.status = 200
    with pytest.raises(lib_exc.InvalidHttpSuccessCode):
        upload.put_image_data(FakeImagesClient(), 'an-image', b'x')
