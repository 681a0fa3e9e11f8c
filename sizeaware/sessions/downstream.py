"""Handing a finished image to Glance, with the caller's own credentials.

The finished image goes in as the caller's own ``PUT .../file``: a
sub-request through the rest of the pipeline (the size filter, then
Glance), built from the caller's environ, so it carries its identity, its
request context and its request id. Asking Glance about the image is
general to every filter and lives in :mod:`sizeaware.subrequests`; its
names are kept here for the session modules that use them.
"""

import webob

from sizeaware import headers
from sizeaware.subrequests import GlanceAnswer
from sizeaware.subrequests import Passed
from sizeaware.subrequests import caller
from sizeaware.subrequests import get_image
from sizeaware.subrequests import sub_environ

__all__ = ['GlanceAnswer', 'Passed', 'caller', 'get_image', 'put_image',
           'sub_environ']


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
