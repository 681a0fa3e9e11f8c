"""The errors sizeaware raises, and the one place that maps them to HTTP.

Code that inspects headers or streams a body raises these domain errors and
nothing HTTP-shaped: a reader deep inside a store driver has no business
building responses. The filter turns an error into a response with
:func:`http_error`, so every status code the project answers with is
decided here.
"""

import webob.exc


class SizeawareError(Exception):
    """A request sizeaware refuses; ``str()`` is the client-facing text."""


class MalformedHeader(SizeawareError):
    """A header's value is not of the form its grammar requires."""


class ConflictingLength(SizeawareError):
    """Content-Length and the declared image size disagree."""


class PartialUpload(SizeawareError):
    """A plain upload carries Content-Range.

    RFC 9110 section 14.5: a server that does not support partial PUT must
    reject it, or it would store a fragment as if it were the whole image.
    """


class UnsupportedFraming(SizeawareError):
    """The body is framed in a way the filter cannot count reliably."""


class ImageTooLarge(SizeawareError):
    """The declared size exceeds the configured maximum."""


class SizeRequired(SizeawareError):
    """The deployment requires a known size and the request gives none."""


class BodySizeMismatch(SizeawareError, ValueError):
    """The body's length differs from the declared image size.

    Also a ``ValueError``, so that an application that treats ``ValueError``
    from its input as bad client data (Glance's upload handler does)
    restores the image to ``queued`` quietly instead of logging a traceback.

    :param declared: the size the client declared.
    :param received: bytes received before the mismatch was found.
    """

    def __init__(self, declared, received, message):
        super().__init__(message)
        self.declared = declared
        self.received = received


class BodyTooShort(BodySizeMismatch):
    """The body ended before the declared size."""

    def __init__(self, declared, received):
        super().__init__(
            declared, received,
            'Image data size mismatch: declared %d bytes, received %d bytes.'
            % (declared, received))


class BodyTooLong(BodySizeMismatch):
    """The body went on past the declared size."""

    def __init__(self, declared):
        super().__init__(
            declared, declared + 1,
            'Image data size mismatch: declared %d bytes, received more '
            'than %d bytes.' % (declared, declared))


class ClientDisconnected(BodySizeMismatch):
    """The connection broke before the declared size arrived."""

    def __init__(self, declared, received, reason):
        super().__init__(
            declared, received,
            'Image upload interrupted after %d of %d declared bytes: %s'
            % (received, declared, reason))


_HTTP_ERRORS = (
    (ImageTooLarge, webob.exc.HTTPRequestEntityTooLarge),
    (SizeRequired, webob.exc.HTTPLengthRequired),
    (SizeawareError, webob.exc.HTTPBadRequest),
)


def http_error(error):
    """The webob HTTP exception (usable as a WSGI app) for ``error``."""
    for error_class, http_class in _HTTP_ERRORS:
        if isinstance(error, error_class):
            return http_class(explanation=str(error))
    raise TypeError('not a sizeaware error: %r' % (error,))
