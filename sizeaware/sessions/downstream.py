"""Asking Glance, with the caller's own credentials.

The resumable filter never touches Glance's database: whether an image
exists, is visible to the caller and is ``queued`` is what Glance answers
to the caller's own ``GET /v2/images/<id>``, and the finished image goes in
as the caller's own ``PUT .../file``. Both are sub-requests through the
rest of the pipeline (the size filter, then Glance), built from the
caller's environ, so they carry its identity, its request context and its
request id.
"""

import io
import json

import webob

from sizeaware import exceptions
from sizeaware import headers

# Request headers that describe the caller's body, not a sub-request's.
_BODY_KEYS = ('CONTENT_LENGTH', 'CONTENT_TYPE', 'HTTP_CONTENT_RANGE',
              'HTTP_TRANSFER_ENCODING', 'HTTP_X_IMAGE_SHA256',
              headers.IMAGE_SIZE_ENVIRON, 'HTTP_EXPECT',
              'wsgi.input_terminated', 'QUERY_STRING')


class Passed(webob.Response):
    """Glance's answer to a sub-request, to be handed on as it is."""


class GlanceAnswer(Exception):
    """Glance answered a sub-request in a way that is its own to explain
    (an expired token, a server error): the answer goes to the client as
    it is."""

    def __init__(self, response):
        super().__init__('Glance answered %s' % response.status)
        self.response = response


def caller(environ):
    """``(project_id, user_id)`` of the request: from the request context
    that Glance's ``context`` filter built, else from the identity headers
    keystonemiddleware sets."""
    context = environ.get('webob.adhoc_attrs', {}).get('context')
    if context is not None:
        return (getattr(context, 'project_id', None),
                getattr(context, 'user_id', None))
    return environ.get('HTTP_X_PROJECT_ID'), environ.get('HTTP_X_USER_ID')


def sub_environ(environ, method, path, body=b'', content_length=None):
    """A copy of ``environ`` for another request by the same caller."""
    sub = {key: value for key, value in environ.items()
           if key not in _BODY_KEYS and not key.startswith('webob.')}
    sub['webob.adhoc_attrs'] = dict(environ.get('webob.adhoc_attrs', {}))
    sub['REQUEST_METHOD'] = method
    sub['PATH_INFO'] = path
    sub['QUERY_STRING'] = ''
    sub['wsgi.input'] = io.BytesIO(body) if isinstance(body, bytes) else body
    if content_length is not None:
        sub['CONTENT_LENGTH'] = str(content_length)
    return sub


def get_image(app, environ, image_id):
    """The image as the caller sees it.

    :raises sizeaware.exceptions.ImageNotFound: when Glance says 404 (or
        403): the image does not exist or the caller may not see it.
    :raises GlanceAnswer: for any other answer but 200.
    """
    sub = sub_environ(environ, 'GET', '/v2/images/%s' % image_id)
    sub['HTTP_ACCEPT'] = 'application/json'
    response = webob.Request(sub).get_response(app)
    response.__class__ = Passed
    app_iter = response.app_iter
    try:
        response.body = response.body
    finally:
        # Read whole, then closed, as PEP 3333 asks of whoever iterates.
        close = getattr(app_iter, 'close', None)
        if close is not None:
            close()
    if response.status_int in (403, 404):
        raise exceptions.ImageNotFound(
            'No image with id %s.' % headers.quote(image_id))
    if response.status_int != 200:
        raise GlanceAnswer(response)
    try:
        return json.loads(response.body)
    except ValueError:
        raise GlanceAnswer(response) from None


def put_image(app, environ, path, body, size):
    """One ordinary upload of ``size`` bytes read from ``body``, with the
    size declared for the size filter and glance_store.

    :returns: Glance's answer, a webob response.
    """
    sub = sub_environ(environ, 'PUT', path, body, content_length=size)
    sub['CONTENT_TYPE'] = 'application/octet-stream'
    sub[headers.IMAGE_SIZE_ENVIRON] = str(size)
    response = webob.Request(sub).get_response(app)
    response.__class__ = Passed
    return response
