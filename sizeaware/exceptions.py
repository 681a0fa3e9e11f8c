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


class UnsupportedTransferCoding(SizeawareError):
    """A transfer coding other than ``chunked`` (RFC 9112 section 6.1)."""


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
    """The connection broke before the declared size arrived.

    Nobody is left to read the answer; its status (499, as Swift and nginx
    log a client that went away) is for the server's request log.
    """

    def __init__(self, declared, received, reason):
        super().__init__(
            declared, received,
            'Image upload interrupted after %d of %s bytes: %s'
            % (received, _of(declared), reason))


class ClientTimeout(BodySizeMismatch):
    """The client stopped sending before the declared size arrived.

    Unlike a disconnect, the client may still be listening: it gets 408, as
    Swift answers a client that goes quiet mid-body.
    """

    def __init__(self, declared, received, reason):
        super().__init__(
            declared, received,
            'Image upload timed out after %d of %s bytes: %s'
            % (received, _of(declared), reason))


class RangeNotSatisfiable(SizeawareError):
    """A ``Content-Range`` whose range lies outside its own total size.

    :param size: the total size, for the ``Content-Range: bytes */N`` that
        RFC 9110 section 15.5.17 asks the answer to carry.
    """

    def __init__(self, message, size):
        super().__init__(message)
        self.size = size


class UploadConflict(SizeawareError):
    """The request contradicts the transfer session's state: bytes that
    differ from those already held, another request writing the same
    bytes, another total size, a session already finalizing or failed, an
    image no longer ``queued``."""


class SessionNotFound(SizeawareError):
    """No transfer session, or one the caller does not own: the two are
    answered alike, so a session's existence leaks to nobody."""


class MethodNotAllowed(SizeawareError):
    """A method a transfer session's URL does not answer."""


class ImageNotFound(SizeawareError):
    """The image does not exist or is not visible to the caller."""


class UnknownStore(SizeawareError):
    """An upload names a store (``X-Image-Meta-Store``) Glance does not
    have."""


class GlanceUnreachable(SizeawareError):
    """Glance gave no answer to a request of the filter's own (a store-
    native session's location)."""


class CommitFailed(SizeawareError):
    """Glance did not take a complete store-native session's location:
    every byte is kept, and finalizing again retries."""


class TooManySessions(SizeawareError):
    """The project already has as many sessions as it may have."""


class SpoolFull(SizeawareError):
    """The spool cannot reserve room for another session's image."""


class SpoolUnavailable(SizeawareError):
    """The spool directory cannot be used (missing, not writable)."""


class ImageRefused(SizeawareError):
    """The assembled image failed a check at finalize: its checksum, its
    disk format, or a safety check of that format (a qcow2 backing file)."""


class ProtocolVersionUnsupported(SizeawareError):
    """A tus request asks for a protocol version the filter does not speak.

    :param supported: the versions it does, for the ``Tus-Version`` header
        the answer must carry.
    """

    def __init__(self, message, supported):
        super().__init__(message)
        self.supported = supported


class UnsupportedMediaType(SizeawareError):
    """A body of a media type the request does not take (a tus PATCH that
    is not ``application/offset+octet-stream``)."""


class ChecksumMismatch(SizeawareError):
    """A body whose checksum differs from the one its request declared;
    none of its bytes are kept."""


class DigestMismatch(SizeawareError):
    """A body whose RFC 9530 ``Content-Digest`` differs from its bytes;
    none of them are kept (400, as the RFC leaves it to the server)."""


class BeyondUploadLength(SizeawareError):
    """A body that would take an upload past the length declared when it
    was created."""


class UploadForbidden(SizeawareError):
    """A write to an upload that takes none (a tus final upload, made only
    of its partial uploads)."""


class PreconditionFailed(SizeawareError):
    """An ``If-Match`` that the image's validator does not match (RFC 9110
    section 13.1.1)."""


class DownloadCorrupt(SizeawareError):
    """The image data a store handed back differs from the image's
    recorded checksum, or ends before or after the image's size.

    Found while the whole image streams out, after its status line was
    sent: there is no answer left to give, only a connection to break
    before the last byte, so no client holds a complete-looking wrong
    image.

    :param sent: bytes handed to the client before the break.
    """

    def __init__(self, message, sent):
        super().__init__(message)
        self.sent = sent


class BackendReadError(SizeawareError):
    """A read from a store's backend that cannot go on as one continuous,
    exact stream (:mod:`sizeaware.store.restart`).

    Raised inside the image's stream, usually after Glance has sent its
    headers: the client then sees its connection break, never a short
    body that looks complete.
    """


class BackendObjectChanged(BackendReadError):
    """The object is no longer the one the read began on: a 412 to the
    restart's ``If-Match``, or another ETag."""


class BackendRangeMismatch(BackendReadError):
    """The backend answered a ranged request with something else than that
    range: a 200, another ``Content-Range``, another total size, or more
    bytes than asked for."""


class BackendReadFailed(BackendReadError):
    """The read broke and cannot be restarted: its retries are spent, or
    the object has no strong ETag to pin a restart to."""


def _of(declared):
    return 'an unknown number of' if declared is None else '%d' % declared


class HTTPClientDisconnect(webob.exc.HTTPClientError):
    """499: the status a server logs for a client that went away."""

    code = 499
    title = 'Client Disconnect'
    explanation = 'The client went away before the request was complete.'


class HTTPChecksumMismatch(webob.exc.HTTPClientError):
    """460: the status tus 1.0's checksum extension answers a body whose
    checksum differs from the declared one."""

    code = 460
    title = 'Checksum Mismatch'
    explanation = 'The body does not match its declared checksum.'


class HTTPInsufficientStorage(webob.exc.HTTPServerError):
    """507 (RFC 4918 section 11.5): the spool has no room for the upload."""

    code = 507
    title = 'Insufficient Storage'
    explanation = 'There is not enough room to hold the upload.'


_HTTP_ERRORS = (
    (ImageTooLarge, webob.exc.HTTPRequestEntityTooLarge),
    (BeyondUploadLength, webob.exc.HTTPRequestEntityTooLarge),
    (ProtocolVersionUnsupported, webob.exc.HTTPPreconditionFailed),
    (PreconditionFailed, webob.exc.HTTPPreconditionFailed),
    (UnsupportedMediaType, webob.exc.HTTPUnsupportedMediaType),
    (ChecksumMismatch, HTTPChecksumMismatch),
    (UploadForbidden, webob.exc.HTTPForbidden),
    (RangeNotSatisfiable, webob.exc.HTTPRequestRangeNotSatisfiable),
    (UploadConflict, webob.exc.HTTPConflict),
    (SessionNotFound, webob.exc.HTTPNotFound),
    (ImageNotFound, webob.exc.HTTPNotFound),
    (MethodNotAllowed, webob.exc.HTTPMethodNotAllowed),
    (TooManySessions, webob.exc.HTTPTooManyRequests),
    (SpoolFull, HTTPInsufficientStorage),
    (SpoolUnavailable, webob.exc.HTTPServiceUnavailable),
    (GlanceUnreachable, webob.exc.HTTPServiceUnavailable),
    (CommitFailed, webob.exc.HTTPServiceUnavailable),
    (SizeRequired, webob.exc.HTTPLengthRequired),
    (UnsupportedTransferCoding, webob.exc.HTTPNotImplemented),
    (ClientTimeout, webob.exc.HTTPRequestTimeout),
    (ClientDisconnected, HTTPClientDisconnect),
    (BackendReadError, webob.exc.HTTPBadGateway),
    (SizeawareError, webob.exc.HTTPBadRequest),
)


def http_error(error):
    """The webob HTTP exception (usable as a WSGI app) for ``error``."""
    for error_class, http_class in _HTTP_ERRORS:
        if isinstance(error, error_class):
            # The error's text alone, whatever the class's own template.
            response = http_class(explanation=str(error),
                                  body_template='${explanation}')
            if isinstance(error, RangeNotSatisfiable):
                response.headers['Content-Range'] = 'bytes */%d' % error.size
            if isinstance(error, ProtocolVersionUnsupported):
                response.headers['Tus-Version'] = error.supported
            return response
    raise TypeError('not a sizeaware error: %r' % (error,))
