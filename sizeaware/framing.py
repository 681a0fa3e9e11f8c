"""Where a request body ends, on each WSGI server Glance runs under.

A Content-Length body ends at its length on every server. A chunked body
ends at its terminating chunk, but servers hand it to the application in
different ways, and the filter must read it to that end to tell a body of
exactly the declared size from a longer one:

* uwsgi (``http-chunked-input``) does not put it in ``wsgi.input`` at all:
  it is read with ``uwsgi.chunked_read()``, which returns one chunk a call
  and ``b''`` at the end (and which Glance itself calls, bypassing
  ``wsgi.input``, unless the request looks length-framed);
* eventlet (``glance-api`` of Glance 2025.1 and earlier) de-chunks it in
  ``wsgi.input`` and ends it at the terminating chunk, without saying so
  in ``wsgi.input_terminated``;
* servers that set ``wsgi.input_terminated`` (gunicorn, mod_wsgi, waitress,
  werkzeug) promise that ``wsgi.input`` ends where the body does.

On any other server a chunked body has no end the filter can trust, and
the upload is refused with a request to send a Content-Length instead.
"""

import errno

from sizeaware import exceptions
from sizeaware import stream


def open_body(environ, declared, chunked, stream_class=stream.BodyStream):
    """A :class:`~sizeaware.stream.BodyStream` over this request's body.

    :param declared: the size the body must have.
    :param chunked: whether the body uses chunked transfer coding.
    :param stream_class: called as ``stream_class(pull, declared,
        delimited=...)``: a subclass of the stream base (or a partial of
        one) whose hook does something with each piece, such as writing it
        to a spool.
    :raises sizeaware.exceptions.UnsupportedFraming: for a chunked body on a
        server that offers no way to read it to its end.
    """
    if not chunked:
        return stream_class(environ['wsgi.input'].read, declared,
                            delimited=True)
    pull = (_uwsgi_chunks(environ) or _eventlet_chunks(environ) or
            _terminated_input(environ))
    if pull is None:
        raise exceptions.UnsupportedFraming(
            'This server cannot read a chunked image upload to its end; '
            'send the image with a Content-Length.')
    return stream_class(pull, declared, delimited=False)


def _uwsgi_chunks(environ):
    if 'uwsgi.version' not in environ:
        return None
    try:
        import uwsgi
    except ImportError:
        return None
    chunked_read = getattr(uwsgi, 'chunked_read', None)
    if chunked_read is None:
        return None
    return lambda hint: chunked_read()


def _eventlet_chunks(environ):
    body = environ.get('wsgi.input')
    if type(body).__module__ != 'eventlet.wsgi' or not getattr(
            body, 'chunked_input', False):
        return None
    from eventlet import wsgi

    def pull(hint):
        try:
            return body.read(hint)
        except wsgi.ChunkReadError as exc:
            # A chunk-size line that is not hex, or none at all because the
            # connection closed between chunks: the body breaks off here.
            raise ConnectionAbortedError(
                errno.ECONNABORTED,
                'chunked body broken off: %s' % exc) from exc
    return pull


def _terminated_input(environ):
    if not environ.get('wsgi.input_terminated'):
        return None
    return environ['wsgi.input'].read
