"""The openstackclient plugin (``openstack sizeaware upload|download``):
its commands take the console script's options, and make their connection
from openstackclient's session and the image endpoint it picks.

openstackclient's ClientManager is a fake here (the session it holds is a
real keystoneauth1 one, whose requests a scripted transport adapter
answers); the commands, their parsers and the plugin module are the real
ones.
"""

import argparse
from importlib import metadata
import pathlib
import re

from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import pytest

pytest.importorskip('osc_lib')

from sizeaware.client import cli  # noqa: E402
from sizeaware.client import connection  # noqa: E402
from sizeaware.client import errors  # noqa: E402
from sizeaware.cmd import transfer  # noqa: E402
from sizeaware.osc import plugin  # noqa: E402
from sizeaware.osc import transfer as osc_transfer  # noqa: E402
from tests.unit import test_client_connection  # noqa: E402

ENDPOINT = 'http://glance.test:9292/v2'
#: The console script's own ways to name a cloud and an endpoint;
#: openstackclient has options of its own for both.
ENDPOINT_OPTIONS = {'--os-cloud', '--os-image-url'}


class FakeClientManager:
    """What the plugin uses of openstackclient's ClientManager."""

    def __init__(self, session, endpoint=ENDPOINT, region_name='RegionTwo',
                 interface='internal'):
        self.session = session
        self.region_name = region_name
        self.interface = interface
        self.endpoint = endpoint
        self.asked = []

    def get_endpoint_for_service_type(self, service_type, region_name=None,
                                      interface='public'):
        self.asked.append((service_type, region_name, interface))
        return self.endpoint

    @property
    def sizeaware(self):
        return plugin.make_client(self)


class FakeApp:
    def __init__(self, client_manager):
        self.client_manager = client_manager


def scripted_session(*script):
    session = ks_session.Session(auth=noauth.NoAuth())
    adapter = test_client_connection.ScriptedAdapter(script)
    session.session.mount('http://', adapter)
    return session, adapter


def command(cls, manager=None):
    """The command ``cls`` and its parser, as openstackclient makes them."""
    if manager is None:
        manager = FakeClientManager(scripted_session()[0])
    cmd = cls(FakeApp(manager), None)
    return cmd, cmd.get_parser('openstack sizeaware %s'
                               % cls.transfer_command)


def console_parser(name):
    (subparsers,) = [a for a in transfer.build_parser()._actions
                     if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[name]


def arguments(parser):
    """Each argument but --help: its option strings (or dest), default,
    help, metavar, nargs and type."""
    return {
        tuple(a.option_strings) or a.dest:
            (a.dest, a.default, a.help, a.metavar, a.nargs, a.type)
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction)}


@pytest.mark.parametrize('cls', [osc_transfer.Upload, osc_transfer.Download])
def test_the_commands_take_the_console_scripts_arguments(cls):
    _, parser = command(cls)
    expected = arguments(console_parser(cls.transfer_command))
    for option in ENDPOINT_OPTIONS:
        del expected[(option,)]
    assert arguments(parser) == expected


@pytest.mark.parametrize('cls', [osc_transfer.Upload, osc_transfer.Download])
def test_the_commands_describe_themselves_as_the_console_script(cls):
    cmd, _ = command(cls)
    description = console_parser(cls.transfer_command).description
    assert cmd.get_description() == description


def test_make_client_asks_for_the_image_endpoint_of_the_region_and_interface():
    session = scripted_session()[0]
    manager = FakeClientManager(session)
    client = plugin.make_client(manager)
    assert manager.asked == [('image', 'RegionTwo', 'internal')]
    conn = client.connect(headers={'X-A': 'b'}, read_timeout=7.0)
    assert isinstance(conn, connection.GlanceConnection)
    assert conn.session is session
    assert conn.endpoint == 'http://glance.test:9292'
    assert conn.headers == {'X-A': 'b'}
    assert conn.read_timeout == 7.0


def test_without_an_image_endpoint_make_client_says_so():
    manager = FakeClientManager(scripted_session()[0], endpoint=None)
    with pytest.raises(errors.TransferError, match='no image endpoint'):
        plugin.make_client(manager)


def test_the_command_connects_through_openstackclients_session():
    session, _ = scripted_session()
    cmd, parser = command(osc_transfer.Upload, FakeClientManager(session))
    args = parser.parse_args([
        '--os-header', 'X-Trace: 1', '--connect-timeout', '2',
        '--read-timeout', '3', 'img', '-'])
    conn = cmd.connect(args)
    assert conn.session is session
    assert conn.endpoint == 'http://glance.test:9292'
    assert conn.headers == {'X-Trace': '1'}
    assert (conn.connect_timeout, conn.read_timeout) == (2.0, 3.0)


def test_a_refusal_ends_the_command_with_status_3(tmp_path, capsys):
    session, adapter = scripted_session((404, b'no such image'))
    cmd, parser = command(osc_transfer.Download, FakeClientManager(session))
    args = parser.parse_args(['--os-header', 'X-Trace: 1', '--no-progress',
                              'img', str(tmp_path / 'out')])
    assert cmd.take_action(args) == 3
    assert 'sizeaware: refused' in capsys.readouterr().err
    ((method, url, headers, _),) = adapter.sent
    assert (method, url) == ('GET', 'http://glance.test:9292/v2/images/img')
    assert headers['X-Trace'] == '1'


def test_a_missing_image_endpoint_ends_the_command_with_status_1(
        tmp_path, capsys):
    manager = FakeClientManager(scripted_session()[0], endpoint=None)
    cmd, parser = command(osc_transfer.Download, manager)
    args = parser.parse_args(['img', str(tmp_path / 'out')])
    assert cmd.take_action(args) == 1
    assert 'no image endpoint' in capsys.readouterr().err


@pytest.mark.parametrize('argv', [
    ['--chunk-size', '1M', 'img', 'f'],
    ['--chunk-digest', 'nonesuch', 'img', 'f'],
    ['--os-header', 'no colon', 'img', 'f']])
def test_bad_usage_exits_2_as_in_the_console_script(argv, capsys):
    cmd, parser = command(osc_transfer.Upload)
    with pytest.raises(SystemExit) as caught:
        cmd.take_action(parser.parse_args(argv))
    assert caught.value.code == 2
    assert 'openstack sizeaware upload: error:' in capsys.readouterr().err


def test_the_command_runs_in_the_clients_cli_module(monkeypatch):
    """The plugin parses; sizeaware.client.cli runs, as for the console
    script."""
    ran = []
    monkeypatch.setattr(cli, 'run', lambda command, args, connect: ran.append(
        (command, args.image)) or 7)
    cmd, parser = command(osc_transfer.Download)
    assert cmd.take_action(parser.parse_args(['img', 'out'])) == 7
    assert ran == [('download', 'img')]


def test_the_plugin_module_names_its_api_and_version():
    assert plugin.API_NAME == 'sizeaware'
    assert plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS
    parser = plugin.build_option_parser(argparse.ArgumentParser())
    args = parser.parse_args(['--os-sizeaware-api-version', '1'])
    # openstackclient reads it by API_VERSION_OPTION without the "os_".
    assert getattr(args, plugin.API_VERSION_OPTION) == '1'


def test_the_entry_points_are_the_plugin_and_its_commands():
    (extension,) = [e for e in metadata.entry_points(
        group='openstack.cli.extension') if e.name == 'sizeaware']
    assert extension.load() is plugin
    commands = {e.name: e.load() for e in metadata.entry_points(
        group='openstack.sizeaware.v1')}
    assert commands == {'sizeaware_upload': osc_transfer.Upload,
                        'sizeaware_download': osc_transfer.Download}


def test_only_the_osc_package_imports_openstackclients_libraries():
    package = pathlib.Path(plugin.__file__).parent.parent
    pattern = re.compile(r'^\s*(from|import)\s+(osc_lib|cliff|'
                         r'openstackclient)\b', re.M)
    importing = sorted(
        str(path.relative_to(package)) for path in package.rglob('*.py')
        if pattern.search(path.read_text())
        and path.parent.name != 'osc')
    assert importing == []
