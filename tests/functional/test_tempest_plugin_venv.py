"""``sizeaware_tempest_plugin`` in tempest's venv, installed as plugins are:
editable and ``--no-deps`` (:func:`teststack.tempest.tempest_venv`, the
venv ``tools/run-tempest`` runs tempest from).

A plugin's import error breaks tempest's test discovery for every test,
not only its own, so these prove, without any server:

* the venv holds tempest and this package, and none of this package's
  own dependencies that tempest does not need (so an import of them by
  the plugin would fail here as it fails in a deployment's tempest);
* ``tempest run --list-tests`` lists every test of the plugin and
  tempest's image tests, with no import error;
* importing the plugin's entry point and its test module imports neither
  this package's client (``sizeaware``) nor keystoneauth1, glance_store,
  webob, oslo.middleware or requests.
"""

import json
import re
import subprocess
import unittest

import pytest

from sizeaware_tempest_plugin.tests.api import test_image_size
from teststack import tempest as tempest_stack
from teststack import venvs

#: Distributions this package depends on and tempest does not.
NOT_FOR_TEMPEST = ('glance-store', 'keystoneauth1', 'webob',
                   'oslo-middleware', 'openstacksdk', 'crc32c', 'tqdm')
#: Top-level modules the plugin must not import (requests is in the venv,
#: for oslo.config, and tempest does not import it).
NOT_IMPORTED = ('sizeaware', 'keystoneauth1', 'glance_store', 'webob',
                'oslo_middleware', 'requests', 'openstack')
REGEX = r'^(tempest\.api\.image\.|sizeaware_tempest_plugin\.)'
#: One of tempest's image tests (tempest is pinned, see REQUIREMENTS).
AN_IMAGE_TEST = ('tempest.api.image.v2.test_images.BasicOperationsImagesTest.'
                 'test_register_upload_get_image_file')


@pytest.fixture(scope='module')
def venv():
    return tempest_stack.tempest_venv()


def _run(argv, **kwargs):
    return subprocess.run([str(a) for a in argv], capture_output=True,
                          text=True, timeout=300, **kwargs)


def _normalized(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def test_the_venv_holds_none_of_our_dependencies_tempest_lacks(venv):
    proc = _run([venvs.venv_python(venv), '-m', 'pip', 'list',
                 '--format', 'json', '--disable-pip-version-check'])
    assert proc.returncode == 0, proc.stderr
    installed = {_normalized(d['name']): d for d in json.loads(proc.stdout)}
    assert 'tempest' in installed
    assert 'sizeaware' in installed
    assert installed['sizeaware'].get('editable_project_location')
    assert not set(NOT_FOR_TEMPEST) & set(installed)


def test_tempest_lists_the_plugins_tests_and_its_image_tests(venv, tmp_path):
    workspace = tmp_path / 'workspace'
    proc = _run([venvs.venv_bin(venv, 'tempest'), 'init',
                 '--workspace-path', tmp_path / 'workspaces.yaml', workspace])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _run([venvs.venv_bin(venv, 'tempest'), 'run', '--list-tests',
                 '--regex', REGEX], cwd=workspace)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'import errors' not in proc.stdout
    listed = {tempest_stack.base_test_id(line)
              for line in proc.stdout.split()}
    plugin_class = test_image_size.ImageSizeTest
    expected = {'%s.%s.%s' % (plugin_class.__module__, plugin_class.__name__,
                              name) for name in
                unittest.TestLoader().getTestCaseNames(plugin_class)}
    assert len(expected) == 8
    assert {t for t in listed
            if t.startswith('sizeaware_tempest_plugin.')} == expected
    assert AN_IMAGE_TEST in listed
    assert len([t for t in listed if t.startswith('tempest.api.image.')]) > 50


@pytest.mark.parametrize('module', [
    'sizeaware_tempest_plugin.plugin',
    test_image_size.__name__,
])
def test_importing_the_plugin_imports_none_of_our_dependencies(venv,
                                                               module):
    # python -X importtime writes every module it imports to stderr, as
    # "import time: self | cumulative | name"; -m runs the module.
    proc = _run([venvs.venv_python(venv), '-X', 'importtime', '-m', module])
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit('|', 1)[1].strip()
                for line in proc.stderr.splitlines()
                if line.startswith('import time:') and '|' in line}
    assert 'tempest.lib.common.rest_client' in imported
    top_level = {name.split('.')[0] for name in imported}
    assert not set(NOT_IMPORTED) & top_level
