"""``openstack sizeaware upload`` and ``openstack sizeaware download``: the
openstackclient plugin, run as the tests venv's own ``openstack``
executable with a keystone user's ``OS_*`` variables, against Glance 33
behind the run's keystone with the resumable and download filters.

The Glance is in keystone's catalog in a region of its own, made for this
module and removed after it: its ``internal`` endpoint is the Glance, its
``public`` one a port nothing listens on. So a transfer that works with
``--os-region-name REGION --os-interface internal`` found the Glance
through openstackclient's authentication and catalog, as given on its
command line, and one without ``--os-interface`` cannot reach it.

Each test proves one of:

* the plugin's commands are listed and their help lists every option of
  the console script's commands, but the console script's own
  --os-cloud and --os-image-url;
* an image uploaded in two streams is active with the data's size and
  sha512, and downloaded again is the same bytes;
* the interface and region given are the ones used: the public endpoint
  of the same region is tried by default, and the command ends with
  status 1 and "cannot reach Glance";
* ``OS_IMAGE_ENDPOINT_OVERRIDE`` wins over the catalog (the same
  command with it reaches Glance), and a 4xx (an image that does not
  exist) ends the command with status 3.
"""

import argparse
import contextlib
import hashlib
import os
import pathlib
import subprocess
import sys
import uuid

from openstack import connection as sdk_connection
import pytest

from sizeaware.cmd import transfer
from tests.functional import conftest
from teststack import process

MiB = 2**20
#: Two 4 MiB chunks, the second short.
SIZE = 6 * MiB + 12345
USER = 'user1'
OPENSTACK = str(pathlib.Path(sys.executable).with_name('openstack'))
#: The console script's own ways to name a cloud and an endpoint.
ENDPOINT_OPTIONS = {'--os-cloud', '--os-image-url'}


@contextlib.contextmanager
def own_region(keystone, url):
    """A region of keystone's catalog, removed on exit, holding the image
    service's ``internal`` endpoint at ``url`` and its ``public`` one at a
    closed port; its name."""
    identity = sdk_connection.Connection(
        auth_type='password', auth=keystone.admin, identity_api_version='3',
        region_name='RegionOne', interface='public').identity
    name = 'sizeaware-osc-%s' % uuid.uuid4().hex[:8]
    made = []  # (delete, resource), undone last first
    try:
        made.append((identity.delete_region, identity.create_region(id=name)))
        service = next((s for s in identity.services() if s.type == 'image'),
                       None)
        if service is None:
            service = identity.create_service(name='glance', type='image')
            made.append((identity.delete_service, service))
        for interface, endpoint in (
                ('internal', url),
                ('public', 'http://127.0.0.1:%d' % process.free_port())):
            made.append((identity.delete_endpoint, identity.create_endpoint(
                service_id=service.id, interface=interface, url=endpoint,
                region_id=name)))
        yield name
    finally:
        for delete, resource in reversed(made):
            delete(resource)


@pytest.fixture(scope='module')
def glance(postgres, keystone):
    """Glance 33 behind keystone, resumable uploads on, in the catalog in
    the region :attr:`region` of its own (see :func:`own_region`)."""
    with conftest.glance_behind_keystone(
            postgres, keystone, 'glance33osc', resumable={}) as server, \
            own_region(keystone, server.url) as region:
        server.region = region
        yield server


@pytest.fixture(scope='module')
def data():
    return os.urandom(SIZE)


@pytest.fixture
def api(glance):
    return conftest.client_for(glance, USER)


def openrc(keystone, user, home):
    """The environment of ``user`` having sourced an openrc: no other
    ``OS_*`` variable, and a home of its own (no clouds.yaml)."""
    account = keystone.users[user]
    variables = {
        'auth_url': keystone.auth_url, 'identity_api_version': '3',
        'username': user, 'password': account['password'],
        'project_name': account['project_name'],
        'user_domain_name': 'Default', 'project_domain_name': 'Default'}
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env.update(('OS_%s' % k.upper(), v) for k, v in variables.items())
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / 'cache'))
    return env


def openstack(env, *args, timeout=120):
    return subprocess.run([OPENSTACK, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def catalog(glance, interface=None):
    """openstackclient's options that pick the endpoint: the region of
    ``glance`` and ``interface``."""
    return ['--os-region-name', glance.region] + (
        ['--os-interface', interface] if interface else [])


def console_options(command):
    (subparsers,) = [a for a in transfer.build_parser()._actions
                     if isinstance(a, argparse._SubParsersAction)]
    return {option for action in subparsers.choices[command]._actions
            for option in action.option_strings} - ENDPOINT_OPTIONS


def test_the_help_lists_the_commands_and_their_options(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env['HOME'] = str(tmp_path)
    # At once: openstackclient takes seconds to start.
    children = {args: subprocess.Popen(
        [OPENSTACK, *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for args in (
            ('sizeaware', '--help'), ('help', 'sizeaware', 'upload'),
            ('sizeaware', 'download', '--help'))}
    shown = {args: child.communicate(timeout=120)[0]
             for args, child in children.items()}
    listed = shown['sizeaware', '--help']
    assert 'sizeaware upload' in listed
    assert 'sizeaware download' in listed
    for command, args in (('upload', ('help', 'sizeaware', 'upload')),
                          ('download', ('sizeaware', 'download', '--help'))):
        assert children[args].returncode == 0, shown[args]
        assert 'usage: openstack sizeaware %s' % command in shown[args]
        for option in console_options(command):
            assert option in shown[args]
        for option in ENDPOINT_OPTIONS:
            assert option not in shown[args]


def test_upload_and_download_through_the_catalog(glance, api, data, tmp_path):
    env = openrc(glance.keystone, USER, tmp_path)
    source = tmp_path / 'image.raw'
    source.write_bytes(data)
    image_id = api.create_image()
    uploaded = openstack(env, *catalog(glance, 'internal'), 'sizeaware',
                         'upload', '--parallel', '2', image_id, str(source))
    assert uploaded.returncode == 0, uploaded.stderr
    assert 'uploaded %d bytes to image %s' % (SIZE, image_id) in (
        uploaded.stderr)
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['size'] == SIZE
    assert image['os_hash_value'] == hashlib.sha512(data).hexdigest()

    target = tmp_path / 'copy.raw'
    downloaded = openstack(env, *catalog(glance, 'internal'), 'sizeaware',
                           'download', image_id, str(target))
    assert downloaded.returncode == 0, downloaded.stderr
    assert 'downloaded %d bytes of image %s' % (SIZE, image_id) in (
        downloaded.stderr)
    assert target.read_bytes() == data


def test_the_public_endpoint_is_the_default(glance, tmp_path):
    env = openrc(glance.keystone, USER, tmp_path)
    result = openstack(env, *catalog(glance), 'sizeaware', 'download',
                       '--connect-timeout', '2', str(uuid.uuid4()),
                       str(tmp_path / 'out'))
    assert result.returncode == 1, result.stderr
    assert 'sizeaware: cannot reach Glance' in result.stderr


def test_the_endpoint_override_wins_and_a_refusal_is_status_3(
        glance, tmp_path):
    env = openrc(glance.keystone, USER, tmp_path)
    env['OS_IMAGE_ENDPOINT_OVERRIDE'] = glance.url
    result = openstack(env, *catalog(glance), 'sizeaware', 'download',
                       '--connect-timeout', '2', str(uuid.uuid4()),
                       str(tmp_path / 'out'))
    assert result.returncode == 3, result.stderr
    assert 'sizeaware: refused' in result.stderr
    assert not (tmp_path / 'out').exists()
