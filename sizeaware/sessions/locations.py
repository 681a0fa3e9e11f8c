"""Handing a store-native session's bytes to Glance by their location.

Glance's location API (``POST /v2/images/{id}/locations``, 2024.2 and
later) adds a location to a ``queued`` image and runs its
``location_import`` task: the location is checked against the configured
stores, the image's ``size`` is read from the store, the image turns
``active``, and, with ``do_secure_hash`` (Glance's default), its
``checksum`` and ``os_hash_value`` are computed from the store in the
background.

Glance lets only a caller with the ``service`` role add a location of any
store but ``http``, and an upload's caller is a project member. The
request therefore goes to Glance over HTTP, as Nova's and Cinder's do,
carrying the caller's own credentials (the image is the caller's, and
Glance checks that the caller may see and change it) and a *service
token* of the user the operator grants for it in ``[sizeaware_service_
user]`` (keystoneauth's options, as ``[service_user]`` in Nova): Glance's
authtoken turns that token into service roles. Where Glance trusts
identity headers (a pipeline without authtoken, for tests) the request
says ``X-Service-Roles: service`` instead; behind authtoken that header is
removed and counts for nothing.

The location is the session's own, derived when it was created (never a
client's), and only for the image it was created for.
"""

import time

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg

from sizeaware import exceptions
from sizeaware import refusals

#: The configuration group of the service user.
SERVICE_USER_GROUP = 'sizeaware_service_user'
#: The caller's identity, as the request to Glance must carry it: the
#: token (keystone), or the headers a pipeline without authtoken trusts.
_IDENTITY_HEADERS = ('X_AUTH_TOKEN', 'X_IDENTITY_STATUS', 'X_PROJECT_ID',
                     'X_USER_ID', 'X_ROLES', 'X_TENANT_ID', 'X_DOMAIN_ID',
                     'X_USER_DOMAIN_ID', 'X_PROJECT_DOMAIN_ID',
                     'X_PROJECT_NAME', 'X_USER_NAME')


def register_opts(conf):
    """``[sizeaware_service_user]``: keystoneauth's auth and session
    options."""
    ks_loading.register_session_conf_options(conf, SERVICE_USER_GROUP)
    ks_loading.register_auth_conf_options(conf, SERVICE_USER_GROUP)


def list_opts():
    """The service user's options, for ``oslo-config-generator``."""
    return [(SERVICE_USER_GROUP,
             ks_loading.get_session_conf_options()
             + ks_loading.get_auth_common_conf_options()
             + ks_loading.get_auth_plugin_conf_options('password'))]


class Locations:
    """Glance's location API, for the filter of one Glance API process.

    :param conf: the filter's configuration object (Glance's).
    :param glance_url: where Glance answers; None: Glance's
        ``worker_self_reference_url``, else the address the upload came
        to.
    :param timeout: seconds to wait for the image to turn ``active``.
    """

    def __init__(self, conf, glance_url=None, timeout=60.0):
        register_opts(conf)
        self.glance_url = glance_url or _self_reference(conf)
        self.timeout = timeout
        auth = ks_loading.load_auth_from_conf_options(conf,
                                                      SERVICE_USER_GROUP)
        #: keystoneauth's session, for its retries, TLS options and the
        #: service user's token (cached and renewed by the plugin).
        self.session = ks_loading.load_session_from_conf_options(
            conf, SERVICE_USER_GROUP, auth=auth) if auth is not None else (
            ks_session.Session())
        self.service_user = auth is not None

    def add(self, environ, image_id, url):
        """Ask Glance to add ``url`` to the caller's image.

        :returns: ``(status, text)`` of Glance's answer.
        :raises sizeaware.exceptions.GlanceUnreachable: no answer came (the
            location may or may not have been added).
        """
        headers = {'Content-Type': 'application/json',
                   'Accept': 'application/json'}
        for name in _IDENTITY_HEADERS:
            value = environ.get('HTTP_' + name)
            if value is not None:
                headers[name.replace('_', '-').title()] = value
        rid = refusals.request_id(environ)
        if rid is not None:
            headers['X-OpenStack-Request-ID'] = rid
        try:
            if self.service_user:
                headers['X-Service-Token'] = self.session.get_token()
            else:
                headers['X-Service-Roles'] = 'service'
            response = self.session.post(
                '%s/v2/images/%s/locations' % (self._root(environ),
                                               image_id),
                json={'url': url}, headers=headers, authenticated=False,
                raise_exc=False, connect_retries=2, log=False,
                timeout=self.timeout)
        except ks_exceptions.ClientException as exc:
            raise exceptions.GlanceUnreachable(
                'Glance could not be asked to take the image\'s location: '
                '%s.' % exc) from exc
        return response.status_code, response.text

    def _root(self, environ):
        if self.glance_url:
            return self.glance_url.rstrip('/')
        host = environ.get('HTTP_HOST') or '%s:%s' % (
            environ['SERVER_NAME'], environ['SERVER_PORT'])
        return '%s://%s' % (environ.get('wsgi.url_scheme', 'http'), host)


def wait_active(get_image, timeout, interval=0.05, clock=time.monotonic,
                sleep=time.sleep):
    """Wait for Glance's ``location_import`` task to end.

    :param get_image: asks Glance for the image, as the caller.
    :returns: ``(True, image)`` once it is ``active``; ``(False, image)``
        when the task ended without making it so (the image is ``queued``
        and its import lock, ``os_glance_import_task``, is gone); ``(None,
        image)`` on timeout.
    """
    deadline = clock() + timeout
    while True:
        image = get_image()
        if image.get('status') == 'active':
            return True, image
        if image.get('status') == 'queued' and (
                'os_glance_import_task' not in image):
            return False, image
        if clock() >= deadline:
            return None, image
        sleep(interval)


def _self_reference(conf):
    try:
        return conf.worker_self_reference_url or conf.public_endpoint
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None
