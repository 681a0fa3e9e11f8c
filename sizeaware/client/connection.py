"""The one Glance HTTP client: keystoneauth1 sessions, configured the way
every OpenStack client is.

Credentials come from openstacksdk's loader (``OS_*`` variables,
``--os-cloud`` and clouds.yaml). The image endpoint comes from the service
catalog, or from ``--os-image-url`` / ``OS_IMAGE_URL``; given that and no
credentials at all, requests carry no token (keystoneauth1's ``noauth``)
but any extra headers given, which is how a Glance without keystone is
reached. Every request has explicit connect and read timeouts, is never
retried underneath (the transfers retry, knowing what was sent), and
raises nothing for an HTTP status: callers judge answers with
:mod:`sizeaware.client.answers`.
"""

import http.client
import json
import os
import re
import time

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import requests
import urllib3

from sizeaware.client import answers
from sizeaware.client import errors

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

#: What a broken, refused or silent connection raises, wherever it breaks:
#: in keystoneauth1 before the answer, in requests or urllib3 while a body
#: streams.
CONNECTION_ERRORS = (ks_exceptions.ConnectionError,
                     requests.exceptions.RequestException,
                     urllib3.exceptions.HTTPError, http.client.HTTPException,
                     OSError)

_VERSION_SUFFIX = re.compile(r'/v2(\.\d+)?/?$')
#: Bytes handed to the socket per send of a request body (urllib3's
#: default is 16 KiB: four times the system calls, and the Python around
#: them, for the same image).
BODY_BLOCK = 1 << 20


def root_url(url):
    """An image endpoint without its trailing ``/`` and ``/v2``."""
    return _VERSION_SUFFIX.sub('', url.rstrip('/')).rstrip('/')


def parse_header(text):
    """``'Name: value'`` -> ``('Name', 'value')``."""
    name, sep, value = text.partition(':')
    if not sep or not name.strip():
        raise ValueError('a header is "Name: value", not %r' % text)
    return name.strip(), value.strip()


def _credentials_configured(cloud):
    return bool(cloud or os.environ.get('OS_CLOUD')
                or os.environ.get('OS_AUTH_URL')
                or os.environ.get('OS_AUTH_TYPE'))


class GlanceConnection:
    """Requests to one Glance, through one keystoneauth1 session.

    :param session: a ``keystoneauth1.session.Session``.
    :param endpoint: the image service's root URL (``/v2`` is stripped).
    :param headers: sent with every request.
    :param authenticated: False for a session without a token.
    """

    def __init__(self, session, endpoint, headers=None, authenticated=None,
                 connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT):
        self.session = session
        _send_in_big_blocks(session)
        self.endpoint = root_url(endpoint)
        self.headers = dict(headers or {})
        self.authenticated = authenticated
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    @classmethod
    def from_config(cls, cloud=None, image_url=None, headers=None,
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT):
        """A connection configured as the ``openstack`` CLI would be.

        :param cloud: a clouds.yaml cloud (default ``OS_CLOUD``, else the
            ``OS_*`` variables).
        :param image_url: overrides the catalog's image endpoint (default
            ``OS_IMAGE_URL``); without any credentials configured, no token
            is sent.
        """
        image_url = image_url or os.environ.get('OS_IMAGE_URL')
        if image_url and not _credentials_configured(cloud):
            return cls(ks_session.Session(auth=noauth.NoAuth()), image_url,
                       headers, authenticated=False,
                       connect_timeout=connect_timeout,
                       read_timeout=read_timeout)
        import openstack.config  # only where there are credentials to load

        try:
            region = openstack.config.OpenStackConfig().get_one(cloud=cloud)
            session = region.get_session()
            if not image_url:
                image_url = session.get_endpoint(
                    service_type='image',
                    interface=region.get_interface() or 'public',
                    region_name=region.get_region_name('image'))
        except Exception as exc:  # openstacksdk's and keystoneauth1's own
            raise errors.TransferError(
                'cannot set up the connection: %s' % exc) from exc
        if not image_url:
            raise errors.TransferError('no image endpoint in the catalog; '
                                       'give --os-image-url')
        return cls(session, image_url, headers,
                   connect_timeout=connect_timeout,
                   read_timeout=read_timeout)

    def request(self, method, path, *, headers=None, data=None,
                json_body=None, stream=False, read_timeout=None):
        """One request, never retried here; the ``requests.Response``,
        whatever its status. Raises one of :data:`CONNECTION_ERRORS` when
        the connection fails or is silent past the read timeout."""
        all_headers = dict(self.headers)
        all_headers.update(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
            all_headers.setdefault('Content-Type', 'application/json')
        return self.session.request(
            self.endpoint + path, method, headers=all_headers, data=data,
            stream=stream, raise_exc=False, connect_retries=0, log=False,
            authenticated=self.authenticated,
            timeout=(self.connect_timeout, read_timeout or self.read_timeout))

    # -- the image API ----------------------------------------------------
    #
    # The records (create, get, update, delete) are bookkeeping a transfer
    # cannot go on without: a refusal raises. The data and the import are
    # what Glance and its filters judge: their answers are returned,
    # whatever the status, for the caller to judge.

    def create_image(self, **properties):
        """A new image's record; ``properties`` are its JSON fields
        (Glance needs ``disk_format`` and ``container_format`` before it
        takes data)."""
        response = self.request('POST', '/v2/images', json_body=properties)
        try:
            answers.raise_for_status(response, 'POST image')
            return answers.json_of(response, 'POST image')
        finally:
            response.close()

    def get_image(self, image_id):
        response = self.request('GET', '/v2/images/%s' % image_id)
        try:
            answers.raise_for_status(response, 'GET image %s' % image_id)
            return answers.json_of(response, 'GET image %s' % image_id)
        finally:
            response.close()

    def delete_image(self, image_id):
        """Delete an image; one already gone is no error (404): cleanup
        after a failed run meets them."""
        response = self.request('DELETE', '/v2/images/%s' % image_id)
        try:
            if response.status_code != 404:
                answers.raise_for_status(response,
                                         'DELETE image %s' % image_id)
        finally:
            response.close()

    def put_data(self, image_id, data, *, target='file', size=None,
                 headers=None, version='v2', read_timeout=None):
        """PUT an image's data to ``/file`` (upload) or ``/stage``
        (glance-direct's first step); the ``requests.Response``, whatever
        its status: a refusal (413 for a body past its declared size, 409)
        may come before the body is sent, and is the caller's to judge.

        :param data: bytes; a file object, sent with a ``Content-Length``
            taken from its ``len()`` or its file's size (from its position
            on); or an iterator of bytes, sent chunked, one chunk a piece.
        :param size: sent as ``X-OpenStack-Image-Size`` (as given, so a
            string goes unchanged): what sizeaware's filter holds the body
            to before Glance reads it.
        :param headers: more headers (``Content-Range`` for a ranged PUT).
        :param version: the API version in the path (Glance serves
            ``/v2.1`` and later alike).
        """
        all_headers = {'Content-Type': 'application/octet-stream'}
        if size is not None:
            all_headers['X-OpenStack-Image-Size'] = str(size)
        all_headers.update(headers or {})
        return self.request('PUT', '/%s/images/%s/%s' % (version, image_id,
                                                         target),
                            headers=all_headers, data=data,
                            read_timeout=read_timeout)

    def import_image(self, image_id, method='glance-direct'):
        """Start an image's import (``glance-direct`` imports the staged
        data); the response, whatever its status: Glance refuses an import
        of data it does not hold, and the caller judges that."""
        return self.request('POST', '/v2/images/%s/import' % image_id,
                            json_body={'method': {'name': method}})

    def wait_for_image(self, image_id, done, *, timeout=60.0, interval=0.2,
                       backoff=None, wanted=None):
        """The image's record once ``done(record)`` is true: the one loop
        that polls an image's record (Glance stores a body after its
        answer may be lost, and imports after it answers 202).

        :param done: a predicate on the record; it may raise, which ends
            the wait with its exception.
        :param backoff: a :class:`~sizeaware.client.retry.Backoff`: a
            connection that fails and a 5xx are tried again with its waits
            and within its limit. Without one, they raise.
        :param wanted: what is waited for, named in the message of the
            :class:`~errors.TransferError` raised when the image stays
            otherwise for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                image = self.get_image(image_id)
            except (errors.Transient,) + CONNECTION_ERRORS as exc:
                if backoff is None:
                    raise
                backoff.failed(exc)
                continue
            if done(image):
                return image
            if time.monotonic() > deadline:
                raise errors.TransferError('image %s stayed %s%s' % (
                    image_id, image['status'],
                    ', not %s' % wanted if wanted else ''))
            time.sleep(interval)

    def wait_for_status(self, image_id, statuses, timeout=60.0,
                        interval=0.2):
        """The image's record once its status is one of ``statuses``
        (:meth:`wait_for_image`)."""
        if isinstance(statuses, str):
            statuses = (statuses,)
        return self.wait_for_image(
            image_id, lambda image: image['status'] in statuses,
            timeout=timeout, interval=interval, wanted=' or '.join(statuses))

    def update_properties(self, image_id, properties):
        """Add or replace ``properties`` (a dict of strings) in one PATCH."""
        image = self.get_image(image_id)
        ops = [{'op': 'replace' if key in image else 'add',
                'path': '/%s' % key, 'value': value}
               for key, value in sorted(properties.items())]
        response = self.request(
            'PATCH', '/v2/images/%s' % image_id, data=json.dumps(ops),
            headers={'Content-Type':
                     'application/openstack-images-v2.1-json-patch'})
        try:
            answers.raise_for_status(response, 'PATCH image %s' % image_id)
            return answers.json_of(response, 'PATCH image %s' % image_id)
        finally:
            response.close()


def _send_in_big_blocks(session):
    """Make the session's connections send bodies :data:`BODY_BLOCK` at a
    time (their pools are made on first use, with these arguments)."""
    requests_session = getattr(session, 'session', None)
    for adapter in getattr(requests_session, 'adapters', {}).values():
        manager = getattr(adapter, 'poolmanager', None)
        if manager is not None:
            manager.connection_pool_kw['blocksize'] = BODY_BLOCK
