"""A session's phases and actions, declared digests, and the sessions of
images that are gone: the resumable filter before a fake Glance."""

import base64
import hashlib
import logging

import crc32c
import pytest

from tests.unit import fakes
from tests.unit.test_resumable import DATA
from tests.unit.test_resumable import IMAGE
from tests.unit.test_resumable import PATH
from tests.unit.test_resumable import SESSION
from tests.unit.test_resumable import N
from tests.unit.test_resumable import images
from tests.unit.test_resumable import put_range
from tests.unit.test_resumable import request
from tests.unit.test_resumable import spooled
from tests.unit.test_resumable import stack
from tests.unit.test_resumable import uploads

OTHER = '6f1c2a77-0000-4000-8000-000000000002'


def act(app, action=None, method='POST', **kwargs):
    path = SESSION if action is None else SESSION + '/' + action
    return fakes.serve(app, request(method, path, **kwargs))


def document(app):
    response = act(app, method='GET')
    assert response.status_int == 200, response.text
    return response.json


def digest_header(algorithm, data):
    if algorithm == 'crc32c':
        raw = crc32c.crc32c(data).to_bytes(4, 'big')
    else:
        raw = hashlib.new(algorithm.replace('-', ''), data).digest()
    return '%s=:%s:' % (algorithm, base64.b64encode(raw).decode())


@pytest.fixture
def glance(glance_app):
    return glance_app(images=images())


@pytest.fixture
def app(glance, tmp_path):
    return stack(glance, tmp_path)


def test_pause_refuses_writes_until_resumed(app, glance):
    assert put_range(app, 0, 99).status_int == 204
    assert act(app, 'pause').json['phase'] == 'paused_user'
    response = put_range(app, 100, N - 1)
    assert response.status_int == 409
    assert 'paused' in response.text
    assert document(app)['bytes_held'] == 100
    assert act(app, 'resume').json['phase'] == 'paused_system'
    assert put_range(app, 100, N - 1).status == '204 Fake'
    assert uploads(glance)[0].body == DATA
    phases = [phase for phase, _ in document(app)['phases']]
    assert phases == ['transferring', 'paused_user', 'transferring',
                      'finalizing', 'finished_success']


def test_finalize_lists_what_is_missing_then_finishes(app, glance,
                                                      tmp_path):
    put_range(app, 0, 9)
    put_range(app, 20, N - 1)
    response = act(app, 'finalize')
    assert response.status_int == 409
    assert 'bytes 10-19 are missing' in response.text
    assert uploads(glance) == []
    # Glance fails for a reason of its own: every byte is kept.
    glance.status = 503
    response = put_range(app, 10, 19)
    assert response.status_int == 503
    status = document(app)
    assert status['phase'] == 'paused_system'
    assert status['bytes_held'] == N and '503' in status['error']
    assert 'finalize again' in status['error']
    # Finalizing again completes the image; no byte is sent again.
    glance.status = 204
    response = act(app, 'finalize')
    assert response.status_int == 200
    assert response.json['phase'] == 'finished_success'
    assert uploads(glance)[-1].body == DATA
    assert spooled(tmp_path) == []
    assert act(app, 'finalize').status_int == 404


def test_extend_and_actions_answer_post_only(app):
    put_range(app, 0, 9)
    before = document(app)['expires_at']
    assert act(app, 'extend').json['expires_at'] >= before
    assert act(app, 'pause', method='GET').status_int == 405
    assert act(app, 'finalize', method='DELETE').status_int == 405
    assert act(app, 'pause', project='p2').status_int == 404


def test_a_cancelled_session_cannot_be_paused_or_finalized(app):
    put_range(app, 0, 9)
    assert act(app, method='DELETE').status_int == 204
    for action in ('pause', 'resume', 'finalize', 'extend'):
        assert act(app, action).status_int == 404
    assert document(app)['phase'] == 'cancelled_user'


def test_delete_while_another_request_finalizes_is_409(app, glance):
    put_range(app, 0, N - 2)
    session = app.storage.session(IMAGE, 'file', ('p1', 'u1'))
    with session.writer(N - 1, N - 1) as stream_class:
        writer = stream_class(lambda hint: DATA[N - 1:], 1, True)
        writer.read(1)
        assert session.commit(*writer.unclaimed())[1]
    # This request finalizes now; a cancel must not pull the data from
    # under it.
    response = act(app, method='DELETE')
    assert response.status_int == 409
    assert 'being finalized' in response.text
    assert document(app)['phase'] == 'finalizing'
    session.close()


@pytest.mark.parametrize('algorithm', ['crc32c', 'sha-256', 'sha-512'])
def test_a_content_digest_is_checked_before_the_bytes_count(app, algorithm):
    wrong = digest_header(algorithm, b'other')
    response = put_range(app, 0, 99, headers={'Content-Digest': wrong})
    assert response.status_int == 400
    assert 'digest' in response.text
    assert document(app)['bytes_held'] == 0
    right = digest_header(algorithm, DATA[:100])
    response = put_range(app, 0, 99, headers={
        'Content-Digest': 'unknown=:AAAA:, ' + right})
    assert response.status_int == 204
    assert document(app)['pieces'] == [
        [0, 99, '%08x' % crc32c.crc32c(DATA[:100])]]


@pytest.mark.parametrize('value', [
    'sha-256=:AAAA:', 'crc32c', 'sha-256=:not base64!:', 'crc32c=:AAAA:'])
def test_a_malformed_content_digest_is_400(app, value):
    response = put_range(app, 0, 99, headers={'Content-Digest': value})
    assert response.status_int == 400
    assert 'Content-Digest' in response.text


def test_a_cut_body_with_a_digest_keeps_nothing(app):
    source = fakes.ChunkSource([DATA[:50]], ConnectionResetError(104, 'x'))

    class Input:
        def read(self, hint):
            return source(hint)
    response = fakes.serve(app, request(
        'PUT', PATH, DATA[:100], stream=Input(), headers={
            'Content-Range': 'bytes 0-99/%d' % N,
            'Content-Digest': digest_header('crc32c', DATA[:100])}))
    assert response.status_int == 499
    assert document(app)['bytes_held'] == 0


def test_a_deleted_images_session_answers_404_and_ends(app, glance):
    assert put_range(app, 0, 9).status_int == 204
    del glance.images[IMAGE]
    response = put_range(app, 10, 19)
    assert response.status_int == 404
    status = document(app)
    assert status['phase'] == 'cancelled_system'
    assert 'deleted' in status['error'] and status['bytes_held'] == 0
    assert spooled(app.storage.spool.directory) == []


def test_sessions_of_deleted_images_do_not_count_against_the_limit(
        glance_app, tmp_path):
    glance = glance_app(images=dict(images(), **{OTHER: dict(
        status='queued', disk_format='raw', owner='p1')}))
    app = stack(glance, tmp_path, max_sessions_per_project='1')
    assert put_range(app, 0, 9).status_int == 204
    other = request('PUT', '/v2/images/%s/file' % OTHER, DATA[:10],
                    headers={'Content-Range': 'bytes 0-9/%d' % N})
    assert fakes.serve(app, other).status_int == 429
    del glance.images[IMAGE]
    other = request('PUT', '/v2/images/%s/file' % OTHER, DATA[:10],
                    headers={'Content-Range': 'bytes 0-9/%d' % N})
    assert fakes.serve(app, other).status_int == 204
    assert document(app)['phase'] == 'cancelled_system'


def test_every_phase_change_is_one_log_line(app, caplog):
    caplog.set_level(logging.INFO, logger='sizeaware.sessions')
    put_range(app, 0, 9, headers={'X-Openstack-Request-Id': 'req-1'})
    act(app, 'pause')
    act(app, method='DELETE')
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith('Upload session')]
    assert [line.split(':')[0] for line in lines] == [
        'Upload session transferring', 'Upload session paused_user',
        'Upload session cancelled_user']
    for line in lines:
        assert 'image_id=%s' % IMAGE in line and 'project_id=p1' in line
        assert 'request_id=' in line


def test_the_same_actions_under_stage(app, glance):
    stage = '/v2/images/%s/stage' % IMAGE
    response = fakes.serve(app, request('PUT', stage, DATA[:10], headers={
        'Content-Range': 'bytes 0-9/%d' % N}))
    assert response.status_int == 204
    response = fakes.serve(app, request('POST', stage + '/session/pause'))
    assert response.json['phase'] == 'paused_user'
    assert response.json['target'] == 'stage'
    response = fakes.serve(app, request('POST', stage + '/session/finalize'))
    assert response.status_int == 409
    assert fakes.serve(app, request('DELETE', stage + '/session')
                       ).status_int == 204
    assert fakes.serve(app, request('GET', stage + '/session')
                       ).json['phase'] == 'cancelled_user'
    # The file target's session is another one: there is none.
    assert act(app, method='GET').status_int == 404
