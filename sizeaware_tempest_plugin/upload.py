"""Image uploads with the headers tempest's own image client cannot send.

Tempest's ``store_image_file`` and ``stage_image_file`` take no headers, so
:func:`put_image_data` sends the PUT itself, the way ``store_image_file``
does, through tempest's image client: its auth provider adds the token and
picks the image endpoint its filters (service, region, endpoint type, API
version) name in the catalog, and its ``raw_request`` sends the body
chunked over its own HTTP pool (TLS settings, proxy, HTTP timeout from
``[service_clients]``) and logs the request as the client's other calls.

An error status raises the ``tempest.lib`` exception tempest's own clients
raise for it (400 ``BadRequest``, 413 ``OverLimit``, ...): see
:func:`raise_for_status`.

This module, like the whole plugin, imports tempest and the standard
library only: the plugin is installed into tempest's environment without
this package's dependencies.
"""

import json

from tempest.lib import exceptions as lib_exc
from tempest.lib.common import rest_client

CHUNK_SIZE = 64 * 1024

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


class Chunks:
    """``data`` in :data:`CHUNK_SIZE` pieces, from its start each time it
    is iterated: when urllib3 sends a request again (a 413 or 503 carrying
    ``Retry-After``, a dropped connection), it sends the whole body again,
    not what is left of a spent iterator."""

    def __init__(self, data: bytes):
        self.data = data

    def __iter__(self):
        view = memoryview(self.data)
        for start in range(0, len(view), CHUNK_SIZE):
            yield bytes(view[start:start + CHUNK_SIZE])


def _decoded(resp, body):
    """The answer's JSON document if it is one, else its text."""
    if isinstance(body, bytes):
        body = body.decode('utf-8', 'replace')
    content_type = resp.get('content-type', '')
    if content_type.split(';')[0].strip().lower() == 'application/json':
        try:
            return json.loads(body)
        except ValueError:
            pass
    return body


def raise_for_status(resp, body=b''):
    """Nothing below 400; else the ``tempest.lib`` exception for the
    status (see :data:`ERRORS`), with the answer's body (parsed when JSON)
    and ``resp`` the response as tempest's HTTP pool returns it (a dict of
    lower-case headers with a ``status``)."""
    status = resp.status
    if status < 400:
        return
    if status == 413 and 'retry-after' in resp:
        raise lib_exc.RateLimitExceeded(_decoded(resp, body), resp=resp)
    error = ERRORS.get(status)
    if error is None:
        raise lib_exc.UnexpectedResponseCode(str(status), resp=resp)
    raise error(_decoded(resp, body), resp=resp)


def put_image_data(images_client, image_id, data, target='file',
                   image_size=None, headers=None):
    """PUT ``data`` (bytes) to the image's ``/file`` or ``/stage``, chunked
    (:data:`CHUNK_SIZE` bytes a chunk), through tempest's ``images_client``.

    :param image_size: the ``X-OpenStack-Image-Size`` value, sent as given
        (``str()`` of it), or None to send no such header.
    :param headers: more headers, sent as given.
    :returns: a ``tempest.lib`` ``ResponseBody`` whose ``response`` is the
        204.
    :raises: the ``tempest.lib`` exception of an error status (see
        :func:`raise_for_status`); ``InvalidHttpSuccessCode`` for any other
        status than 204.
    """
    all_headers = {'Content-Type': 'application/octet-stream'}
    if image_size is not None:
        all_headers['X-OpenStack-Image-Size'] = str(image_size)
    all_headers.update(headers or {})
    chunks = Chunks(data)
    url, all_headers, chunks = images_client.auth_provider.auth_request(
        'PUT', 'images/%s/%s' % (image_id, target), all_headers, chunks,
        images_client.filters)
    # Not tempest's request(): its checks raise UnexpectedContentType for
    # an error answered in any type but JSON or plain text, and it would
    # retry a rate limit on top of urllib3's retries.
    resp, body = images_client.raw_request(
        url, 'PUT', headers=all_headers, body=chunks, chunked=True,
        log_req_body='<%d bytes>' % len(data))
    raise_for_status(resp, body)
    images_client.response_checker('PUT', resp, body)
    images_client.expected_success(204, resp.status)
    return rest_client.ResponseBody(resp)
