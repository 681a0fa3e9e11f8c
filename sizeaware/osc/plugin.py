"""The ``openstack.cli.extension`` module: what openstackclient asks of a
plugin.

``client_manager.sizeaware`` is a :class:`Client`: openstackclient's
keystoneauth1 session and the image endpoint it picks (the catalog's, for
``--os-interface`` and ``--os-region-name``, or the cloud's
``image_endpoint_override``, ``OS_IMAGE_ENDPOINT_OVERRIDE``). Each command
makes its :class:`~sizeaware.client.connection.GlanceConnection` from it,
with its own headers and timeouts.
"""

import os

from sizeaware.client import connection
from sizeaware.client import errors

API_NAME = 'sizeaware'
API_VERSION_OPTION = 'os_sizeaware_api_version'
DEFAULT_API_VERSION = '1'
API_VERSIONS = ('1',)


class Client:
    """openstackclient's session and the image endpoint.

    :param session: a ``keystoneauth1.session.Session``.
    :param endpoint: the image service's URL.
    """

    def __init__(self, session, endpoint):
        self.session = session
        self.endpoint = endpoint

    def connect(self, **options):
        """A :class:`GlanceConnection` through this session; ``options``
        are its keyword arguments (headers, timeouts)."""
        return connection.GlanceConnection(self.session, self.endpoint,
                                           **options)


def make_client(instance):
    """``client_manager.sizeaware``.

    :param instance: openstackclient's ``ClientManager``; authenticated
        already, as openstackclient does before a command that needs it.
    """
    endpoint = instance.get_endpoint_for_service_type(
        'image', region_name=instance.region_name,
        interface=instance.interface)
    if not endpoint:
        raise errors.TransferError(
            'no image endpoint in the catalog; give OS_IMAGE_ENDPOINT_OVERRIDE'
            ' (image_endpoint_override in clouds.yaml)')
    return Client(instance.session, endpoint)


def build_option_parser(parser):
    """openstackclient's global options for this plugin: only the API
    version there is, 1."""
    parser.add_argument(
        '--os-sizeaware-api-version', metavar='<sizeaware-api-version>',
        default=os.environ.get('OS_SIZEAWARE_API_VERSION'),
        help='sizeaware API version, default=%s '
        '(Env: OS_SIZEAWARE_API_VERSION)' % DEFAULT_API_VERSION)
    return parser
