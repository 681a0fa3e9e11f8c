"""The files an operator touches: entry points, paste ini, sample config."""

import pathlib
import subprocess
import sys

from paste import deploy
from stevedore import driver

from sizeaware.middleware import download
from sizeaware.middleware import resumable
from sizeaware.middleware import size_filter
from tests.unit import fakes

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_paste_filter_entry_point():
    factory = driver.DriverManager('paste.filter_factory', 'sizeaware').driver
    assert factory == size_filter.SizeFilter.factory


def test_resumable_filter_entry_point():
    factory = driver.DriverManager('paste.filter_factory', 'resumable').driver
    assert factory == resumable.ResumableFilter.factory


def test_download_filter_entry_point():
    factory = driver.DriverManager('paste.filter_factory', 'download').driver
    assert factory == download.DownloadFilter.factory


def test_config_opts_entry_point_lists_the_group():
    list_opts = driver.DriverManager('oslo.config.opts', 'sizeaware').driver
    (group, options), (service_group, service_options) = list_opts()
    assert group == 'sizeaware'
    assert {o.name for o in options} == {
        'max_image_size', 'require_image_size', 'spool_dir',
        'spool_max_bytes', 'max_sessions_per_project',
        'session_inactivity_timeout', 'session_max_age', 'session_retention',
        'finalize_while_receiving', 'session_storage', 'glance_url',
        'commit_timeout', 'verify_download', 'ranged_store_types'}
    # keystoneauth's own options, for the user that hands locations over.
    assert service_group == 'sizeaware_service_user'
    assert {'auth_type', 'auth_url', 'username', 'password', 'cafile'} <= {
        o.dest for o in service_options}


def test_shipped_paste_ini_puts_the_filters_after_context_everywhere(
        tmp_path):
    ini = REPO / 'etc' / 'api-paste.ini'
    flt = deploy.loadfilter('config:%s' % ini, name='sizeaware')
    assert isinstance(flt(fakes.FakeGlance()), size_filter.SizeFilter)
    flt = deploy.loadfilter('config:%s' % ini, name='resumable',
                            global_conf={'spool_dir': str(tmp_path)})
    assert isinstance(flt(fakes.FakeGlance()), resumable.ResumableFilter)
    flt = deploy.loadfilter('config:%s' % ini, name='download')
    assert isinstance(flt(fakes.FakeGlance()), download.DownloadFilter)
    pipelines = [line.split('=', 1)[1].split()
                 for line in ini.read_text().splitlines()
                 if line.split('=')[0].strip() in (
                     'default', 'caching', 'cachemanagement', 'keystone',
                     'keystone+caching', 'keystone+cachemanagement')]
    assert len(pipelines) == 6
    for pipeline in pipelines:
        context = [i for i, name in enumerate(pipeline)
                   if name in ('context', 'unauthenticated-context')]
        assert pipeline[context[0] + 1] == 'resumable'
        assert pipeline[context[0] + 2] == 'sizeaware'
        assert pipeline.index('sizeaware') < pipeline.index('rootapp')
        assert pipeline[context[0] + 3] == 'download'
        assert pipeline.index('download') < min(
            pipeline.index(name) for name in ('cache', 'rootapp')
            if name in pipeline)


def test_sample_config_is_up_to_date(tmp_path):
    out = tmp_path / 'sample'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator', '--config-file',
         str(REPO / 'etc/oslo-config-generator/sizeaware.conf'),
         '--output-file', str(out)], check=True, cwd=REPO)
    assert out.read_text() == (REPO / 'etc/sizeaware.conf.sample').read_text()


def test_store_driver_entry_point_claims_its_name_as_a_scheme():
    store = driver.DriverManager('glance_store.drivers', 'sizeaware_s3').driver
    # glance_store looks a backend's store up by its type used as a scheme.
    assert 'sizeaware_s3' in store.get_schemes()
    assert 's3' in store.get_schemes()


def test_rbd_driver_entry_point_declares_random_reads():
    from glance_store import capabilities
    store = driver.DriverManager('glance_store.drivers',
                                 'sizeaware_rbd').driver
    assert store._CAPABILITIES & capabilities.BitMasks.READ_RANDOM == (
        capabilities.BitMasks.READ_RANDOM)


def test_tempest_plugin_entry_point():
    from importlib import metadata
    (entry,) = [e for e in metadata.entry_points(group='tempest.test_plugins')
                if e.name == 'sizeaware_tests']
    assert entry.value == (
        'sizeaware_tempest_plugin.plugin:SizeawareTempestPlugin')


def test_swift_driver_entry_point_is_the_factory():
    from sizeaware.store import swift
    factory = driver.DriverManager('glance_store.drivers',
                                   'sizeaware_swift').driver
    assert factory is swift.Store
    assert factory.OPTIONS


def test_http_driver_entry_point_claims_its_name_and_declares_random_reads():
    from glance_store import capabilities
    store = driver.DriverManager('glance_store.drivers',
                                 'sizeaware_http').driver
    assert store._CAPABILITIES & capabilities.BitMasks.READ_RANDOM == (
        capabilities.BitMasks.READ_RANDOM)
    # An instance method of the HTTP driver; it reads no instance state.
    schemes = store.get_schemes(store.__new__(store))
    assert {'sizeaware_http', 'http', 'https'} <= set(schemes)


def test_store_read_options_entry_point():
    list_opts = driver.DriverManager('oslo.config.opts',
                                     'sizeaware.store').driver
    (group, options), = list_opts()
    assert {o.name for o in options} == {
        'read_retries', 'retry_backoff', 'connect_timeout', 'read_timeout',
        'stall_timeout'}


def test_download_options_entry_point():
    list_opts = driver.DriverManager('oslo.config.opts',
                                     'sizeaware.download').driver
    (group, options), = list_opts()
    assert group == 'sizeaware'
    assert {o.name for o in options} == {'verify_download',
                                         'ranged_store_types'}


def test_the_documentation_builds_without_a_warning(tmp_path):
    """A broken reference, an RST error or a module autodoc cannot import
    fails here rather than on a reader (``tox -e docs`` builds the same)."""
    result = subprocess.run(
        [sys.executable, '-m', 'sphinx', '-W', '-q', '-b', 'html',
         str(REPO / 'doc/source'), str(tmp_path)],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]


def test_the_release_notes_lint_clean():
    reno = pathlib.Path(sys.executable).with_name('reno')
    result = subprocess.run([str(reno), 'lint'], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
