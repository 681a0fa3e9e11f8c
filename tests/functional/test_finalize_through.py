"""``finalize_while_receiving`` against a real Glance.

Glance 33 under uwsgi and Glance 30 under its eventlet server, with
``resumable`` finalizing while the request that completes an image
arrives. Through the fault proxy: a whole-image ranged PUT and a one-PATCH
tuspy upload cut mid-way leave the image ``queued`` with nothing stored
and the session holding what arrived, and resume to the exact image; a
qcow2 with a backing file is refused before Glance has all of it.
"""

import time
import uuid

import pytest
from tusclient import client as tus_client
from tusclient import exceptions as tus_exceptions

from tests.functional import client
from tests.functional import conftest
from tests.functional import faultproxy
from tests.functional.test_resumable import assert_active_with
from tests.functional.test_resumable import ended
from tests.functional.test_resumable_faults import DATA
from tests.functional.test_resumable_faults import ROLES
from tests.functional.test_resumable_faults import SERVERS
from tests.functional.test_resumable_faults import N
from tests.functional.test_resumable_faults import assert_qcow2_refused
from tests.functional.test_resumable_faults import held
from tests.functional.test_resumable_faults import put_range
from tests.functional.test_resumable_faults import status
from tests.functional.test_size_filter import assert_untouched

MiB = 1024 * 1024
#: Where the proxy cuts: past the headers, well before the end.
CUT = 2 * MiB


@pytest.fixture(scope='module', params=SERVERS,
                ids=['glance%s-%s' % d for d in SERVERS])
def glance(request):
    release, server = request.param
    server = conftest.glance_on(
        release, server, resumable={'finalize_while_receiving': True},
        processes=2, threads=4)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(glance):
    return client.GlanceClient(glance.url, glance.identity_headers(
        uuid.uuid4().hex, roles=ROLES))


@pytest.fixture
def proxy(glance):
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        yield proxy


def paused(api, image_id, holding=False):
    """The status document, once the cut request has been wound up (the
    client may learn of the cut before the server does); with
    ``holding``, once the session holds some bytes too."""
    for _ in range(100):
        code, document = status(api, image_id)
        if (code == 200 and document['phase'] == 'paused_system'
                and (document['bytes_held'] or not holding)):
            return document
        time.sleep(0.1)
    raise AssertionError('the session never paused: %s %r' % (code,
                                                              document))


def test_whole_image_ranged_put_cut_then_resumed(glance, api, proxy):
    image_id = api.create_image()
    cut_api = client.GlanceClient(proxy.url, api.headers)
    proxy.cut_at(CUT)
    with pytest.raises(OSError):
        put_range(cut_api, image_id, 0, N - 1)
    assert proxy.cut.is_set()
    document = paused(api, image_id)
    # What arrived is kept, though Glance was reading it as it came.
    (kept,) = held(document)
    assert kept[0] == 0 and 0 < kept[1] < CUT, document
    assert_untouched(api, glance, image_id)
    resp = put_range(api, image_id, kept[1] + 1, N - 1)
    assert resp.status == 204, resp
    assert_active_with(api, image_id, DATA)
    assert ended(api, image_id) == 'finished_success'


def test_tuspy_in_one_patch_cut_then_resumed(glance, api, proxy, tmp_path):
    image_file = tmp_path / 'image.raw'
    image_file.write_bytes(DATA)
    image_id = api.create_image()
    tus = tus_client.TusClient('%s/v2/images/%s/file' % (
        proxy.url, image_id), headers=api.headers)
    # tuspy's default: the whole file in one PATCH.
    uploader = tus.uploader(file_path=str(image_file))
    proxy.cut_at(CUT)
    with pytest.raises(tus_exceptions.TusUploadFailed):
        uploader.upload()
    # The client learns of the cut before the server may have read what
    # arrived: wait until the server has kept it.
    paused(api, image_id, holding=True)
    resumed = tus.uploader(file_path=str(image_file), url=uploader.url)
    assert 0 < resumed.offset < CUT
    assert_untouched(api, glance, image_id)
    resumed.upload()
    assert_active_with(api, image_id, DATA)


def test_qcow2_with_a_backing_file_refused_before_its_last_byte(
        glance, api, qcow2_with_backing):
    assert_qcow2_refused(glance, api, qcow2_with_backing)
