"""Enforce ``X-OpenStack-Image-Size`` on Glance image uploads.

Glance hands image data to glance_store without knowing its size unless the
client says it, and then Ceph RBD and Cinder grow volumes while writing and
S3 cannot use multipart upload. Glance 2025.2 and later read the
``X-OpenStack-Image-Size`` header and leave enforcing it to each store
driver; earlier releases ignore it. This filter gives every release the
same strict behaviour:

* it checks the header and ``Content-Length`` before any body byte is read
  and answers 400, 411 or 413 when the headers alone decide;
* it replaces the body with a reader that counts every byte, never lets one
  past the declared size through, and fails a body that ends early;
* it passes the size on as ``CONTENT_LENGTH`` (read by every release), as
  the header (read by 2025.2 and later) and as
  ``environ['sizeaware.expected_size']``;
* when the body does not match, it answers 400 whatever the application
  made of the error, after the store driver has removed the partial data.

It acts on ``PUT /v2/images/{image_id}/file`` and ``.../stage`` only (any
``/v2.N/``, so it may also sit before ``versionnegotiation``); every other
request passes through after one path check, and so does an upload without
the header, except for what the headers alone refuse (``Content-Range``,
and a missing size where ``require_image_size`` is set).

The filter answers only for its own errors: an exception the application
raises for another reason while the body was being refused is logged and
propagates.

Deploy it in every pipeline of ``glance-api-paste.ini``, after ``context``
(or ``unauthenticated-context``) and before ``rootapp``, so that only
authenticated requests are answered and the request id is Glance's::

    [filter:sizeaware]
    use = egg:sizeaware#sizeaware

Configuration, in ``[sizeaware]`` of the service's configuration file or in
the filter's paste section (which wins):

========================  ============  ====================================
Option                    Default       Meaning
========================  ============  ====================================
``max_image_size``        1 TiB         larger declared sizes get 413
``require_image_size``    false         uploads of unknown size get 411
``oslo_config_project``   (unset)       paste only: read this project's
                                        configuration file instead of the
                                        running service's
========================  ============  ====================================
"""

from oslo_log import log as logging
from oslo_middleware import base
import webob

from sizeaware import exceptions
from sizeaware import framing
from sizeaware import headers
from sizeaware import opts
from sizeaware import refusals
from sizeaware import routes

LOG = logging.getLogger(__name__)

#: Where the declared size is published for middleware further down.
EXPECTED_SIZE_KEY = 'sizeaware.expected_size'


class SizeFilter(base.ConfigurableMiddleware):
    """The paste filter; see the module docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.size_filter_opts, group=opts.GROUP)
        self.max_image_size = self._option('max_image_size')
        self.require_image_size = self._option('require_image_size')

    def _option(self, name):
        return opts.option_value(self, opts.size_filter_opts, name)

    def __call__(self, environ, start_response):
        target = routes.upload_target(environ)
        if target is None:
            return self.application(environ, start_response)
        image_id = target[0]
        # Whether a context before this filter named the request; if not,
        # a refusal must carry its id itself.
        named = refusals.request_id(environ) is not None
        try:
            reader = self._admit(environ)
        except exceptions.SizeawareError as error:
            return self._reject(environ, image_id, error, named)(
                environ, start_response)
        if reader is None:
            return self.application(environ, start_response)
        return self._forward(environ, start_response, image_id, reader,
                             named)

    def _admit(self, environ):
        """Decide what the headers alone can decide; wrap the body if sized.

        :returns: the body reader installed as ``wsgi.input``, or None when
            the request passes through unchanged.
        :raises sizeaware.exceptions.SizeawareError: to refuse the request
            before any body byte is read.
        """
        if headers.has_content_range(environ):
            raise exceptions.PartialUpload(
                'Content-Range is not supported on an image upload: the '
                'body must be the whole image.')
        declared = headers.image_size(environ)
        if declared is None:
            # Not ours to judge: the request goes on exactly as it came,
            # unless the deployment insists on a size.
            if self.require_image_size and _unframed_length(environ):
                raise exceptions.SizeRequired(
                    'This cloud requires the image size up front: send %s '
                    'or Content-Length.' % headers.IMAGE_SIZE_HEADER)
            return None
        chunked = headers.is_chunked(environ)
        # RFC 9112 section 6.3: Transfer-Encoding overrides Content-Length.
        length = None if chunked else headers.content_length(environ)
        if declared > self.max_image_size:
            raise exceptions.ImageTooLarge(
                'Declared image size %d bytes exceeds the maximum of %d '
                'bytes.' % (declared, self.max_image_size))
        if length is not None and length != declared:
            raise exceptions.ConflictingLength(
                'Content-Length %d does not match the declared image size '
                '%d.' % (length, declared))
        if declared and not chunked and length is None:
            # RFC 9112 section 6.3: no framing at all means an empty body.
            raise exceptions.BodyTooShort(declared, 0)
        reader = framing.open_body(environ, declared, chunked)
        if declared == 0:
            # An application told CONTENT_LENGTH 0 never reads: prove the
            # body empty here.
            reader.read(0)
        environ['wsgi.input'] = reader
        environ['wsgi.input_terminated'] = True
        environ.pop('HTTP_TRANSFER_ENCODING', None)
        # webob wraps a Content-Length body in LimitedLengthFile and a
        # BufferedReader: one more copy and two more calls per read. The
        # reader already stops at the declared size, so hand webob the
        # reader as its own wrapper (webob caches the pair under this key;
        # were it to stop doing so, it would wrap the reader again: slower,
        # never wrong).
        environ['webob._body_file'] = (reader, reader)
        environ['CONTENT_LENGTH'] = str(declared)
        environ[headers.IMAGE_SIZE_ENVIRON] = str(declared)
        environ[EXPECTED_SIZE_KEY] = declared
        return reader

    def _forward(self, environ, start_response, image_id, reader, named):
        """Call the application; the reader's verdict overrides its answer.

        The application may turn the reader's error into a 400, a 500 or
        nothing at all; the client gets the filter's answer in every case.
        An exception that is neither the reader's error nor raised from it
        belongs to the application: it is logged and propagates.
        """
        request = webob.Request(environ)
        try:
            response = request.get_response(self.application)
        except Exception as exc:
            if reader.error is None or not _caused_by(exc, reader.error):
                if reader.error is not None:
                    LOG.error('Image upload failed for another reason after '
                              'its body was refused: request_id=%s '
                              'image_id=%s error=%r',
                              refusals.request_id(environ),
                              headers.quote(image_id), exc)
                raise
            return self._reject(environ, image_id, reader.error, named)(
                environ, start_response)
        if reader.error is None:
            return response(environ, start_response)
        close = getattr(response.app_iter, 'close', None)
        if close is not None:
            close()
        return self._reject(environ, image_id, reader.error, named,
                            app_status=response.status_int)(
            environ, start_response)

    def _reject(self, environ, image_id, error, named, app_status=None):
        """Log one line about a refused upload and build the response.

        :param named: whether a context before the filter named the request
            (and so will name the answer on its way out).
        """
        declared = environ.get(EXPECTED_SIZE_KEY)
        if declared is None:
            declared = environ.get(headers.IMAGE_SIZE_ENVIRON)
            if declared is not None:
                declared = headers.quote(declared)
        # Refusals decided by the headers alone read no byte of the body.
        received = getattr(error, 'received', 0)
        return refusals.refuse(
            LOG, environ, error, named=named, what='image upload',
            fields=[('image_id', headers.quote(image_id)),
                    ('declared', declared), ('received', received)],
            after=[] if app_status is None else [('app_status', app_status)])


def _unframed_length(environ):
    """Whether the request's size is unknown up front: no Content-Length.

    The value is not judged here: a request without the header is not the
    filter's to refuse for a malformed Content-Length.
    """
    return environ.get('CONTENT_LENGTH') in (None, '')


def _caused_by(exc, error):
    """Whether ``exc`` is ``error`` or was raised from it.

    Only explicit chaining (``raise ... from error``) counts: an exception
    that merely happened while ``error`` was being handled (the database
    failing as Glance restores the image) is a failure of its own.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if exc is error:
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False
