"""``finalize_while_receiving``: the request completing an image hands it
to Glance while its own bytes arrive, for both protocols."""

import hashlib

import pytest

from tests.unit import fakes
from tests.unit.test_resumable import DATA
from tests.unit.test_resumable import IMAGE
from tests.unit.test_resumable import PATH
from tests.unit.test_resumable import SESSION
from tests.unit.test_resumable import N
from tests.unit.test_resumable import images
from tests.unit.test_resumable import put_range
from tests.unit.test_resumable import qcow2
from tests.unit.test_resumable import refused_in_flight
from tests.unit.test_resumable import request
from tests.unit.test_resumable import spooled
from tests.unit.test_resumable import stack
from tests.unit.test_resumable import uploads
from tests.unit.test_tus import DATA as TUS_DATA
from tests.unit.test_tus import N as TUS_N
from tests.unit.test_tus import checksum
from tests.unit.test_tus import create
from tests.unit.test_tus import cut_source
from tests.unit.test_tus import offset_of
from tests.unit.test_tus import send

WHOLE = {'Content-Range': 'bytes 0-%d/%d' % (N - 1, N)}


@pytest.fixture
def glance(glance_app):
    # Small reads, so Glance's reads and the client's pieces interleave.
    return glance_app(images=images(), read_size=1000)


@pytest.fixture
def app(glance, tmp_path):
    return stack(glance, tmp_path, finalize_while_receiving=True)


class Recording:
    """A ``wsgi.input`` that records, at each read, how many uploads
    Glance had begun."""

    def __init__(self, data, glance):
        self.data, self.glance, self.offset = data, glance, 0
        self.seen = []

    def read(self, hint):
        piece = self.data[self.offset:self.offset + min(hint, 4096)]
        self.offset += len(piece)
        self.seen.append(len(uploads(self.glance)))
        return piece


def test_whole_image_in_one_range_goes_through(app, glance, tmp_path):
    body = Recording(DATA, glance)
    response = fakes.serve(app, request('PUT', PATH, DATA, stream=body,
                                        headers=WHOLE))
    assert response.status_int == 204
    (upload,) = uploads(glance)
    assert upload.body == DATA and upload.finished
    assert glance.images[IMAGE]['status'] == 'active'
    assert spooled(tmp_path) == []
    # Glance was reading before the body's first byte was, not after.
    assert body.seen[0] == 1


def test_a_middle_range_completing_the_image(app, glance):
    assert put_range(app, 0, 999).status_int == 204
    assert put_range(app, 5000, N - 1).status_int == 204
    assert uploads(glance) == []
    assert put_range(app, 1000, 4999).status_int == 204
    assert uploads(glance)[-1].body == DATA


def test_a_cut_keeps_what_arrived_and_glance_gets_nothing_whole(app, glance):
    stream = cut_source([DATA[:1000], DATA[1000:3000]])
    response = fakes.serve(app, request('PUT', PATH, DATA, stream=stream,
                                        headers=WHOLE))
    assert response.status_int == 499
    assert refused_in_flight(glance, N)
    assert glance.images[IMAGE]['status'] == 'queued'
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['ranges_held'] == [[0, 2999]]
    assert put_range(app, 3000, N - 1).status_int == 204
    assert uploads(glance)[-1].body == DATA


def test_other_bytes_than_those_held_are_409_and_nothing_stored(app, glance):
    assert put_range(app, 0, 99).status_int == 204
    other = bytes(100) + DATA[100:]
    response = put_range(app, 0, N - 1, data=other)
    assert response.status_int == 409
    assert refused_in_flight(glance, N)
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'paused_system' and status['bytes_held'] == 100


def test_a_refused_format_is_refused_before_the_last_byte(glance_app,
                                                         tmp_path):
    glance = glance_app(images=images(disk_format='qcow2'), read_size=1000)
    app = stack(glance, tmp_path, finalize_while_receiving=True)
    data = qcow2(backing=True)
    response = put_range(app, 0, len(data) - 1, data=data)
    assert response.status_int == 400
    assert 'backing file' in response.text
    assert refused_in_flight(glance, len(data))
    assert glance.images[IMAGE]['status'] == 'queued'
    assert fakes.serve(app, request('GET', SESSION)).json[
        'phase'] == 'finished_failure'


def test_declared_sha256_mismatch(app, glance):
    wrong = hashlib.sha256(b'other').hexdigest()
    response = put_range(app, 0, N - 1, headers={'X-Image-Sha256': wrong})
    assert response.status_int == 400
    assert refused_in_flight(glance, N)


def test_tus_last_patch_goes_through(app, glance):
    location = create(app)
    assert send(app, location, 0, TUS_DATA[:1000]).status_int == 204
    assert uploads(glance) == []
    response = send(app, location, 1000, TUS_DATA[1000:])
    assert response.status_int == 204
    assert response.headers['Upload-Offset'] == str(TUS_N)
    assert uploads(glance)[-1].body == TUS_DATA


def test_tus_cut_last_patch_resumes(app, glance):
    location = create(app)
    response = send(app, location, 0, TUS_DATA, stream=cut_source(
        [TUS_DATA[:1000], TUS_DATA[1000:3000]]))
    assert response.status_int == 499
    assert refused_in_flight(glance, TUS_N)
    assert offset_of(app, location) == 3000
    assert send(app, location, 3000, TUS_DATA[3000:]).status_int == 204
    assert uploads(glance)[-1].body == TUS_DATA


def test_tus_checksum_mismatch_keeps_nothing_of_the_patch(app, glance):
    location = create(app)
    assert send(app, location, 0, TUS_DATA[:100]).status_int == 204
    response = send(app, location, 100, TUS_DATA[100:], headers={
        'Upload-Checksum': checksum('sha1', b'other')})
    assert response.status_int == 460
    assert refused_in_flight(glance, TUS_N)
    assert offset_of(app, location) == 100
    response = send(app, location, 100, TUS_DATA[100:], headers={
        'Upload-Checksum': checksum('sha1', TUS_DATA[100:])})
    assert response.status_int == 204
    assert uploads(glance)[-1].body == TUS_DATA


def test_glance_failing_mid_read_keeps_every_byte_the_client_sends(
        glance, tmp_path):
    """Glance stops reading the image part way, for a trouble of its own
    (its store fails): the rest of the request's body is still received
    and kept, and finalizing again completes the image."""
    failing = [True]

    def store_fails_once(environ, start_response):
        if environ['REQUEST_METHOD'] == 'PUT' and failing[0]:
            failing[0] = False
            environ['wsgi.input'].read(2000)
            start_response('500 Store Failed', [('Content-Length', '0')])
            return [b'']
        return glance(environ, start_response)
    app = stack(store_fails_once, tmp_path, finalize_while_receiving=True)
    assert put_range(app, 0, 999).status_int == 204
    response = put_range(app, 1000, N - 1)
    assert response.status_int == 500
    status = fakes.serve(app, request('GET', SESSION)).json
    assert status['phase'] == 'paused_system'
    assert status['ranges_held'] == [[0, N - 1]], status
    response = fakes.serve(app, request('POST', SESSION + '/finalize'))
    assert response.json['phase'] == 'finished_success'
    assert uploads(glance)[-1].body == DATA
