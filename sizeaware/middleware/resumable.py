"""Resumable image uploads: transfer sessions and ranged PUT.

A multi-gigabyte upload to Glance that breaks at 90 % starts again from
byte 0. This filter keeps partial uploads in a spool on the API node and,
once an image is complete, hands it to Glance as one ordinary upload with
its size declared (through the size filter, which sits after this one),
under the credentials of the request that completed it, so Glance's own
checks and the store's known-size path still apply. The sessions live in
:mod:`sizeaware.sessions`; this module only routes requests to them and
answers.

Requests it acts on (any ``/v2.N/``):

``PUT .../file`` or ``.../stage`` with ``Content-Range: bytes a-b/N``
    writes bytes ``a`` to ``b`` of the ``N``-byte image
    (:mod:`sizeaware.sessions.ranged_put`): 204 with ``Range:
    bytes=...`` (the ranges held) while incomplete, Glance's answer to the
    whole upload once complete. ``X-Image-Sha256`` on the first request
    has the whole image's sha256 checked before it reaches Glance.
``GET .../file/session`` or ``.../stage/session``
    the session's status document, JSON: ``image_id``, ``target``,
    ``phase`` (``transferring``, ``paused``, ``finalizing``, ``finished``,
    ``failed``, ``cancelled``), ``size``, ``bytes_held``, ``ranges_held``
    (``[first, last]`` pairs, last inclusive), ``created_at``,
    ``expires_at``, ``error``, ``sha256``.
``POST`` on the same URL
    extends the session (as every request of its owner does) and answers
    its status document, whose ``expires_at`` has moved on: a client that
    pauses on purpose keeps its upload without sending bytes.
``DELETE`` on the same URL
    cancels the session and removes its spool: 204.
tus 1.0 (``Tus-Resumable``)
    ``OPTIONS`` and ``POST`` on the upload URL create an upload at
    ``.../file/tus/<upload id>``, where ``HEAD``, ``PATCH`` and ``DELETE``
    act on it; the same sessions (:mod:`sizeaware.sessions.tus` describes
    every answer).

A session belongs to the project and user that created it; anyone else
gets 404 from its URL and for a range written to its image, as if it did
not exist, and the session is left as it is. Every other request passes
through after one path check.

Deploy it in every pipeline of ``glance-api-paste.ini`` after ``context``
(or ``unauthenticated-context``) and before ``sizeaware``::

    [filter:resumable]
    use = egg:sizeaware#resumable

It needs no option; those it reads (``spool_dir``, ``spool_max_bytes``,
``max_sessions_per_project``, ``session_inactivity_timeout``,
``session_max_age``, ``finalize_while_receiving`` and the size filter's
``max_image_size``) are documented once, in ``etc/sizeaware.conf.sample``.

tus clients may ask what the server supports with ``OPTIONS``, which the
protocol wants answered without credentials; behind keystone, ``authtoken``
answers 401 before this filter sees it. :class:`TusDiscovery`
(``egg:sizeaware#tus_discovery``), placed before ``authtoken`` in the
keystone pipelines, answers those ``OPTIONS`` and passes every other
request on untouched.
"""

import json

from oslo_log import log as logging
from oslo_middleware import base
import webob

from sizeaware import exceptions
from sizeaware import headers
from sizeaware import opts
from sizeaware import refusals
from sizeaware import routes
from sizeaware.sessions import downstream
from sizeaware.sessions import ranged_put
from sizeaware.sessions import record as records
from sizeaware.sessions import spool as spools
from sizeaware.sessions import tus

LOG = logging.getLogger(__name__)


class ResumableFilter(base.ConfigurableMiddleware):
    """The paste filter; see the module docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.size_filter_opts, group=opts.GROUP)
        self.oslo_conf.register_opts(opts.resumable_opts, group=opts.GROUP)
        self.max_image_size = opts.option_value(
            self, opts.size_filter_opts, 'max_image_size')

        def option(name):
            return opts.option_value(self, opts.resumable_opts, name)
        self.spool = spools.Spool(option('spool_dir'), spools.Limits(
            max_sessions_per_project=option('max_sessions_per_project'),
            max_bytes=option('spool_max_bytes'),
            inactivity_timeout=option('session_inactivity_timeout'),
            max_age=option('session_max_age')))
        self.through = option('finalize_while_receiving')

    def __call__(self, environ, start_response):
        upload = routes.upload_target(environ)
        tus_upload = routes.tus_target(environ)
        if tus_upload is not None:
            target, handle = tus_upload, self._tus
            start_response = _with_tus_resumable(start_response)
        elif upload is not None and headers.has_content_range(environ):
            target, handle = upload, self._ranged_put
        else:
            target, handle = routes.session_target(environ), self._session
            if target is None:
                return self.application(environ, start_response)
        named = refusals.request_id(environ) is not None
        try:
            response = handle(environ, *target)
        except exceptions.SizeawareError as error:
            response = refusals.refuse(
                LOG, environ, error, named=named, what='resumable upload',
                fields=[('image_id', headers.quote(target[0])),
                        ('target', target[1]),
                        ('method', headers.quote(environ['REQUEST_METHOD'])),
                        ('range', headers.quote(
                            environ.get('HTTP_CONTENT_RANGE', '-')))])
        except downstream.GlanceAnswer as answer:
            response = answer.response
        if isinstance(response, downstream.Passed):
            # Glance's own answer, handed on untouched (webob would drop
            # the body of a 204 without closing what it came from).
            start_response(response.status, response.headerlist)
            return response.app_iter
        return response(environ, start_response)

    def _tus(self, environ, image_id, target, upload_id):
        return tus.handle(self.application, self.spool, environ, image_id,
                          target, upload_id, self.max_image_size,
                          self.through)

    def _ranged_put(self, environ, image_id, target):
        first, last, size, chunked = ranged_put.parse(environ,
                                                      self.max_image_size)
        self.spool.reap()
        session = ranged_put.open_session(self.application, self.spool,
                                          environ, image_id, target, size)
        try:
            return ranged_put.write(self.application, environ, session,
                                    first, last, chunked, self.through)
        finally:
            session.close()

    def _session(self, environ, image_id, target):
        method = environ['REQUEST_METHOD']
        if method not in ('GET', 'HEAD', 'POST', 'DELETE'):
            raise exceptions.MethodNotAllowed(
                'A transfer session answers GET, POST (extend) and DELETE '
                'only.')
        self.spool.reap()
        session = self.spool.session(image_id, target,
                                     downstream.caller(environ))
        if session is None:
            raise exceptions.SessionNotFound(
                'No upload session for this image.')
        try:
            if method == 'DELETE':
                session.set_phase(records.CANCELLED)
                session.remove()
                return webob.Response(status=204)
            session.touch()
            response = webob.Response(
                (json.dumps(session.status(), indent=1) + '\n').encode(),
                content_type='application/json', charset=None)
            response.cache_control = 'no-store'
            return response
        finally:
            session.close()


class TusDiscovery(base.ConfigurableMiddleware):
    """The tus ``OPTIONS`` answer, before authentication; see the module
    docstring."""

    def __init__(self, application, conf=None):
        super().__init__(application, conf)
        self.oslo_conf.register_opts(opts.size_filter_opts, group=opts.GROUP)
        self.max_image_size = opts.option_value(
            self, opts.size_filter_opts, 'max_image_size')

    def __call__(self, environ, start_response):
        if (environ.get('REQUEST_METHOD') != 'OPTIONS'
                or routes.tus_target(environ) is None):
            return self.application(environ, start_response)
        return tus.options(self.max_image_size)(
            environ, _with_tus_resumable(start_response))


def _with_tus_resumable(start_response):
    """``start_response`` putting ``Tus-Resumable`` on every tus answer,
    refusals and Glance's own answers included."""
    def start(status, headerlist, exc_info=None):
        if not any(name.lower() == 'tus-resumable' for name, _ in headerlist):
            headerlist = list(headerlist) + [('Tus-Resumable', tus.VERSION)]
        return start_response(status, headerlist, exc_info)
    return start
