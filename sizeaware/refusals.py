"""Answering a refused request: the HTTP answer, its request id, one log line.

Every filter refuses requests the same way, so an operator reads one shape
of log line whatever refused the request, and a client always finds the
request id in the answer:

* the answer is built from the domain error by
  :func:`sizeaware.exceptions.http_error`, the one mapping to HTTP;
* the request id is the one Glance's ``context`` filter assigned, taken
  from this request's environ (never from a thread-local context, which
  under a threaded server may be another request's); a filter deployed in
  front of ``context`` names its answer itself;
* exactly one ``INFO`` line per refusal, every value quoted so a path or a
  header cannot forge a line.
"""

from oslo_context import context as oslo_context

from sizeaware import exceptions
from sizeaware import headers

REQUEST_ID_HEADER = 'x-openstack-request-id'


def request_id(environ):
    """The request id that the pipeline before the filter assigned, or
    None."""
    value = environ.get('openstack.request_id')
    if value:
        return value
    context = environ.get('webob.adhoc_attrs', {}).get('context')
    return getattr(context, 'request_id', None)


def refuse(log, environ, error, *, named, what, fields=(), after=()):
    """Log one line about a refused request and build its answer.

    :param log: the filter's logger, so the line names the filter.
    :param error: the :class:`~sizeaware.exceptions.SizeawareError`.
    :param named: whether a context before the filter named the request
        (and so will name the answer on its way out).
    :param what: what was refused, e.g. ``'image upload'``.
    :param fields: ``(name, value)`` pairs logged before the status;
        values are logged as given, so quote untrusted ones.
    :param after: pairs logged after the status.
    :returns: the answer, a webob response usable as a WSGI app.
    """
    response = exceptions.http_error(error)
    rid = request_id(environ)
    if not named:
        # The filter sits before Glance's context, whose answer (if it
        # named the request at all) this refusal replaces: the filter
        # names the answer.
        rid = rid or oslo_context.generate_request_id()
        response.headers[REQUEST_ID_HEADER] = rid
    log_line(log, rid, error, what=what, status=response.status_int,
             fields=fields, after=after)
    return response


def log_line(log, rid, error, *, what, status, fields=(), after=()):
    """The one ``INFO`` line about a refusal, also one that has no answer
    left to give (a download broken off after its status line was sent:
    ``status`` then says what was sent)."""
    items = [('request_id', rid), *fields, ('status', status), *after,
             ('reason', headers.quote(str(error), limit=None))]
    log.info('Refused %s: ' % what + ' '.join('%s=%%s' % name
                                               for name, _ in items),
             *[value for _, value in items])
