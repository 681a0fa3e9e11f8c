"""Asking Glance, with the caller's own credentials.

Filters never touch Glance's database: whether an image exists, is visible
to the caller, is ``queued`` or ``active``, how big it is and what its
checksum is, is what Glance answers to the caller's own ``GET
/v2/images/<id>``. Such a question is a sub-request through the rest of
the pipeline, built from the caller's environ, so it carries the caller's
identity, request context and request id. The resumable filter asks before
it opens a session and hands a finished image back the same way
(:mod:`sizeaware.sessions.downstream`); the download filter asks before it
answers a download's ranges and validators.
"""

import collections
import io
import json

import webob

from sizeaware import exceptions
from sizeaware import headers
from sizeaware import refusals

# Request headers that describe the caller's body, not a sub-request's.
_BODY_KEYS = ('CONTENT_LENGTH', 'CONTENT_TYPE', 'HTTP_CONTENT_RANGE',
              'HTTP_TRANSFER_ENCODING', 'HTTP_X_IMAGE_SHA256',
              headers.IMAGE_SIZE_ENVIRON, 'HTTP_EXPECT',
              'wsgi.input_terminated', 'QUERY_STRING')

# Request headers that make the caller's request conditional or partial:
# they belong to the caller's own request, not to a question about the
# image record.
_CONDITIONAL_KEYS = ('HTTP_RANGE', 'HTTP_IF_RANGE', 'HTTP_IF_MATCH',
                     'HTTP_IF_NONE_MATCH', 'HTTP_IF_MODIFIED_SINCE',
                     'HTTP_IF_UNMODIFIED_SINCE')


class Passed(webob.Response):
    """Glance's answer to a sub-request, to be handed on as it is."""


class GlanceAnswer(Exception):
    """Glance answered a sub-request in a way that is its own to explain
    (an expired token, a server error): the answer goes to the client as
    it is."""

    def __init__(self, response):
        super().__init__('Glance answered %s' % response.status)
        self.response = response


class Caller(collections.namedtuple('Caller',
                                    'project_id user_id request_id',
                                    defaults=(None,))):
    """Who asks: the owner a transfer session must belong to, and the
    request id what it does is logged with."""


def caller(environ):
    """The :class:`Caller` of the request: from the request context that
    Glance's ``context`` filter built, else from the identity headers
    keystonemiddleware sets."""
    rid = refusals.request_id(environ)
    context = environ.get('webob.adhoc_attrs', {}).get('context')
    if context is not None:
        return Caller(getattr(context, 'project_id', None),
                      getattr(context, 'user_id', None), rid)
    return Caller(environ.get('HTTP_X_PROJECT_ID'),
                  environ.get('HTTP_X_USER_ID'), rid)


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
    for key in _CONDITIONAL_KEYS:
        sub.pop(key, None)
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
