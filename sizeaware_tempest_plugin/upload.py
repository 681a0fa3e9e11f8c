"""Image uploads with the headers tempest's own image client cannot send.

Tempest's ``store_image_file`` and ``stage_image_file`` take no headers, so
these go through the project's Glance client,
:class:`sizeaware.client.connection.GlanceConnection`, set up from what
tempest's image client holds: its token, the image endpoint its filters
(service, region, endpoint type) name in the catalog, its TLS settings,
proxy and HTTP timeout.
An error status raises the ``tempest.lib`` exception tempest's own clients
raise for it (400 ``BadRequest``, 413 ``OverLimit``, ...): see
:func:`raise_for_status`.
"""

import contextlib
import functools
import io
import logging

from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
import requests
from tempest.lib import exceptions as lib_exc

from sizeaware.client import connection

CHUNK_SIZE = 64 * 1024

LOG = logging.getLogger(__name__)

#: The exception tempest's rest client raises for each error status
#: (tempest.lib has no public function for it). A 413 carrying
#: ``Retry-After`` is a rate limit, ``RateLimitExceeded``; any other status
#: of 400 or more raises ``UnexpectedResponseCode``.
ERRORS = {
    400: lib_exc.BadRequest,
    401: lib_exc.Unauthorized,
    403: lib_exc.Forbidden,
    404: lib_exc.NotFound,
    406: lib_exc.NotAcceptable,
    409: lib_exc.Conflict,
    410: lib_exc.Gone,
    412: lib_exc.PreconditionFailed,
    413: lib_exc.OverLimit,
    415: lib_exc.InvalidContentType,
    422: lib_exc.UnprocessableEntity,
    500: lib_exc.ServerFault,
    501: lib_exc.NotImplemented,
}


def _body(response):
    """The answer's JSON document if it is one, else its text."""
    content_type = response.headers.get('Content-Type', '')
    if content_type.split(';')[0].strip().lower() == 'application/json':
        try:
            return response.json()
        except ValueError:
            pass
    return response.text


def raise_for_status(response):
    """Nothing below 400; else the ``tempest.lib`` exception for the
    status (see :data:`ERRORS`), with the answer's body (parsed when JSON)
    and ``resp`` the ``requests.Response``."""
    status = response.status_code
    if status < 400:
        return
    if status == 413 and 'Retry-After' in response.headers:
        raise lib_exc.RateLimitExceeded(_body(response), resp=response)
    error = ERRORS.get(status)
    if error is None:
        raise lib_exc.UnexpectedResponseCode(str(status), resp=response)
    raise error(_body(response), resp=response)


def _verify(images_client):
    """The client's TLS verification as keystoneauth1 takes it: False,
    a CA bundle's path, or True."""
    if images_client.dscv:  # disable_ssl_certificate_validation
        return False
    return images_client.http_obj.connection_pool_kw.get('ca_certs') or True


@contextlib.contextmanager
def glance_connection(images_client):
    """A :class:`~sizeaware.client.connection.GlanceConnection` to the
    image endpoint of tempest's ``images_client``, sending its token, with
    its TLS settings, and its proxy and HTTP timeout
    (``[service_clients]``) when it has them; its connections are closed
    on exit."""
    endpoint = images_client.base_url
    http_obj = images_client.http_obj
    timeouts = {}
    timeout = http_obj.connection_pool_kw.get('timeout')
    if isinstance(timeout, (int, float)):
        timeouts = {'connect_timeout': timeout, 'read_timeout': timeout}
    with requests.Session() as http:
        proxy = getattr(http_obj, 'proxy', None)  # a urllib3 ProxyManager's
        if proxy is not None:
            http.proxies = {'http': proxy.url, 'https': proxy.url}
        session = ks_session.Session(
            auth=token_endpoint.Token(endpoint, images_client.token),
            session=http, verify=_verify(images_client))
        yield connection.GlanceConnection(session, endpoint, **timeouts)


def put_image_data(images_client, image_id, data, target='file',
                   image_size=None, headers=None):
    """PUT ``data`` (bytes) to the image's ``/file`` or ``/stage``, chunked
    (:data:`CHUNK_SIZE` bytes a chunk).

    :param image_size: the ``X-OpenStack-Image-Size`` value, sent as given
        (``str()`` of it), or None to send no such header.
    :returns: the ``requests.Response``, a 204.
    :raises: the ``tempest.lib`` exception of an error status (see
        :func:`raise_for_status`); ``InvalidHttpSuccessCode`` for any other
        status than 204.
    """
    all_headers = {'Content-Type': 'application/octet-stream'}
    if image_size is not None:
        all_headers['X-OpenStack-Image-Size'] = str(image_size)
    all_headers.update(headers or {})
    body = iter(functools.partial(io.BytesIO(data).read, CHUNK_SIZE), b'')
    path = '/v2/images/%s/%s' % (image_id, target)
    with glance_connection(images_client) as glance:
        response = glance.request('PUT', path, headers=all_headers, data=body)
        try:
            LOG.debug('PUT %s%s: %d (request id %s)', glance.endpoint, path,
                      response.status_code,
                      response.headers.get('X-Openstack-Request-Id'))
            raise_for_status(response)
            images_client.expected_success(204, response.status_code)
        finally:
            response.close()
    return response
