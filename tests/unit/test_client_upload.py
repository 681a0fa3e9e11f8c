"""``sizeaware upload`` against a fake Glance behind the resumable filter,
as the server contract describes it: sessions with ``pieces`` and
oVirt's phases, ``Content-Digest`` checked before bytes count as held,
``DELETE`` and ``finalize`` on the session.

Requests go through the real :class:`GlanceConnection` (a keystoneauth1
session and requests' preparation of each request); a transport adapter
mounted on the session hands each one to the fake, a WSGI app, in the same
thread: no socket, no server thread. A fault makes the adapter raise a
connection error after the fake kept what a cut request leaves.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import pathlib
import threading
import urllib.parse

from keystoneauth1 import noauth
from keystoneauth1 import session as ks_session
import pytest
import requests
from requests import adapters
from requests import structures
import webob
import webob.dec

from sizeaware import digests
from sizeaware.client import cli
from sizeaware.client import connection
from sizeaware.client import errors
from sizeaware.client import manifest
from sizeaware.client import readers
from sizeaware.client import retry
from sizeaware.client import upload
from sizeaware.cmd import transfer

IMAGE = '0b5e1e54-0000-4000-8000-00000000c11e'
URL = 'http://glance.test:9292'
MiB = 2**20
#: Small requests, so that a few MiB make many.
REQUEST = 256 * 1024
ENDED = ('finished_success', 'finished_failure', 'cancelled_user',
         'cancelled_system')


def crc(data):
    return digests.new('crc32c', data)


class Cut(Exception):
    """Raised by the fake to have the transport break the connection."""


class WSGITransport(adapters.BaseAdapter):
    """requests' transport: each request is handed to a WSGI app in this
    thread, its body read as a connection reads it (requests' own
    framing)."""

    def __init__(self, app):
        super().__init__()
        self.app = app

    def send(self, request, **kwargs):
        body = request.body
        if body is None:
            data = b''
        elif isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
        elif hasattr(body, 'read'):
            pieces = []
            while piece := body.read(65536):
                pieces.append(bytes(piece))
            data = b''.join(pieces)
        else:
            data = b''.join(body)
        url = urllib.parse.urlsplit(request.url)
        blank = webob.Request.blank(url.path, method=request.method,
                                    headers=dict(request.headers), body=data)
        try:
            answer = blank.get_response(self.app)
        except Cut as exc:
            raise requests.exceptions.ConnectionError(str(exc)) from None
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = structures.CaseInsensitiveDict(answer.headers)
        response._content = answer.body
        response.request = request
        response.url = request.url
        return response

    def close(self):
        pass


class Session:
    """An upload session of the fake: bytes held and the pieces received."""

    def __init__(self, size):
        self.size = size
        self.data = bytearray(size)
        self.held = []  # [start, stop) pairs
        self.pieces = []
        self.phase = 'transferring'
        self.error = None

    def end(self, phase):
        """Ended: the document stays, without the bytes or pieces."""
        self.phase = phase
        self.held, self.pieces = [], []

    def keep(self, first, data):
        if not data:
            return
        self.data[first:first + len(data)] = data
        self.pieces.append([first, first + len(data) - 1,
                            crc(data).hexdigest()])
        held = sorted(self.held + [[first, first + len(data)]])
        merged = []
        for start, stop in held:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        self.held = merged

    @property
    def complete(self):
        return self.held == [[0, self.size]]

    def document(self, with_pieces=True):
        doc = {'phase': self.phase, 'size': self.size,
               'bytes_held': sum(b - a for a, b in self.held),
               'ranges_held': [[a, b - 1] for a, b in self.held],
               'error': self.error}
        if with_pieces:
            doc.update(pieces=self.pieces, piece_digest='crc32c')
        return doc


class SessionGlance:
    """Glance 33 behind sizeaware's resumable filter, for one image.

    :param pieces: the status document lists ``pieces`` (a server before
        them does not, and ignores ``Content-Digest``).
    :param recorded_hash: what Glance records as ``os_hash_value``
        instead of the data's sha512 (a Glance that stored other bytes).
    :param hash_algo: Glance's ``hashing_algorithm``; None for a Glance
        that records only the MD5 ``checksum``.
    """

    def __init__(self, pieces=True, tus=True, recorded_hash=None,
                 hash_algo='sha512', patch_status=None):
        self.record = {'id': IMAGE, 'status': 'queued', 'size': None,
                       'checksum': None, 'os_hash_algo': None,
                       'os_hash_value': None}
        self.pieces = pieces
        self.tus = tus
        self.recorded_hash = recorded_hash
        self.hash_algo = hash_algo
        self.patch_status = patch_status
        self.session = None
        self.stored = None
        #: ``(method, path, headers, body)`` of every request.
        self.calls = []
        #: Applied to the next ranged PUTs, one each: ``fault(body) ->
        #: (body, cut_at)``; ``cut_at`` None for a request not cut.
        self.faults = []
        #: How the next finalizes end: ``'paused'`` (a failure of the
        #: server's own: ``paused_system``, every byte kept).
        self.finalize_outcomes = []
        #: A ranged PUT that reaches this byte is interrupted there (the
        #: client killed): what came before it is kept, as a server keeps
        #: it of a request without digest.
        self.interrupt_at = None
        self._lock = threading.Lock()

    def puts(self):
        return [c for c in self.calls if c[0] == 'PUT']

    def hold(self, data, *pairs):
        """An earlier run's session holding ``data``'s ``[start, stop)``
        ``pairs``."""
        self.session = Session(len(data))
        for start, stop in pairs:
            self.session.keep(start, data[start:stop])

    def __call__(self, environ, start_response):
        with self._lock:  # one request at a time, whatever the streams
            return self._answer(environ, start_response)

    @webob.dec.wsgify
    def _answer(self, request):
        body = request.body
        self.calls.append((request.method, request.path,
                           structures.CaseInsensitiveDict(request.headers),
                           body))
        parts = request.path.strip('/').split('/')[2:]
        if parts[0] != IMAGE:
            return webob.Response(status=404)
        if len(parts) == 1:
            if request.method == 'PATCH':
                return self._patch(request)
            return self._json(self.record)
        target = parts[1]
        if len(parts) == 2:
            if request.method == 'OPTIONS':
                return webob.Response(status=204, headers={
                    'Tus-Version': '1.0.0'} if self.tus else {})
            if 'Content-Range' in request.headers:
                return self._ranged(request, body, target)
            return self._finalize(bytes(body), target)
        if parts[2:] == ['session', 'finalize']:
            return self._finalize(bytes(self.session.data), target)
        if self.session is None:
            return webob.Response(status=404)
        if request.method == 'DELETE':
            self.session.end('cancelled_user')
            return webob.Response(status=204)
        return self._json(self.session.document(self.pieces))

    def _json(self, document):
        return webob.Response(json=document)

    def _patch(self, request):
        if self.patch_status:
            return webob.Response(status=self.patch_status,
                                  text='Forbidden to modify property')
        for op in json.loads(request.body):
            self.record[op['path'].lstrip('/')] = op['value']
        return self._json(self.record)

    def _ranged(self, request, body, target):
        first, rest = request.headers['Content-Range'].split()[1].split('-')
        last, size = rest.split('/')
        first, size = int(first), int(size)
        if self.session is None or self.session.phase in ENDED:
            self.session = Session(size)
        if self.interrupt_at is not None and (
                first <= self.interrupt_at < first + len(body)):
            if not (self.pieces and 'Content-Digest' in request.headers):
                self.session.keep(first, body[:self.interrupt_at - first])
            self.interrupt_at = None
            raise KeyboardInterrupt
        fault = self.faults.pop(0) if self.faults else None
        cut_at = None
        if fault is not None:
            body, cut_at = fault(body)
        digest = request.headers.get('Content-Digest')
        if digest and self.pieces:
            if cut_at is not None:
                raise Cut('cut: nothing of a request with a digest is kept')
            name, value = digest.split('=', 1)
            if (name != 'crc32c' or base64.b64decode(value.strip(':'))
                    != crc(body).digest()):
                return webob.Response(status=400,
                                      text='Content-Digest mismatch')
        if cut_at is not None:
            self.session.keep(first, body[:cut_at])
            raise Cut('cut')
        self.session.keep(first, body)
        if not self.session.complete:
            return webob.Response(status=204)
        return self._finalize(bytes(self.session.data), target)

    def _finalize(self, data, target):
        if self.finalize_outcomes and self.finalize_outcomes.pop(0) == (
                'paused'):
            self.session.phase = 'paused_system'
            self.session.error = 'the store is unavailable'
            return webob.Response(status=503, text='try again')
        self.stored = data
        if self.session is not None:
            self.session.end('finished_success')
        self.record.update(size=len(data))
        if target == 'stage':
            self.record['status'] = 'uploading'
            return webob.Response(status=204)
        self.record.update(status='active',
                           checksum=hashlib.md5(data).hexdigest())
        if self.hash_algo:
            self.record.update(
                os_hash_algo=self.hash_algo,
                os_hash_value=self.recorded_hash or hashlib.new(
                    self.hash_algo, data).hexdigest())
        return webob.Response(status=204)


def connect(app):
    session = ks_session.Session(auth=noauth.NoAuth())
    session.session.mount('http://', WSGITransport(app))
    return connection.GlanceConnection(session, URL, authenticated=False)


def no_wait(attempts=8):
    return retry.Backoff(attempts, sleep=lambda seconds: None)


@pytest.fixture(autouse=True)
def small_requests(monkeypatch):
    monkeypatch.setattr(upload, 'REQUEST_BYTES', REQUEST, raising=False)
    monkeypatch.setattr(upload, 'POLL_INTERVAL', 0, raising=False)


@pytest.fixture
def data():
    return os.urandom(5 * MiB + 3)


@pytest.fixture
def source_file(tmp_path, data):
    path = tmp_path / 'disk.raw'
    path.write_bytes(data)
    return path


def uploaded(glance, source, logs=None, **options):
    """Upload ``source`` (a file's path, or a PipeSource) to ``glance``;
    the figures."""
    if isinstance(source, pathlib.Path):
        options.setdefault('state_dir', source.parent / 'state')
        source = readers.open_source(str(source))
    try:
        return upload.Upload(
            connect(glance), IMAGE, source, backoff=no_wait,
            show_progress=False,
            log=(logs if logs is not None else []).append, **options).run()
    finally:
        source.close()


def run_cli(glance, *argv):
    """``sizeaware upload ...`` through :func:`cli.run`: its exit
    status."""
    args = transfer.build_parser().parse_args(['upload', '--no-progress',
                                               *argv])
    return cli.run('upload', args, lambda: connect(glance))


def assert_active_with(glance, data):
    assert glance.record['status'] == 'active'
    assert glance.stored == data
    recorded = manifest.Manifest.from_properties(glance.record, len(data))
    assert recorded.digests == {
        i: crc(data[o:o + recorded.chunk_size]).digest()
        for i, o in enumerate(range(0, len(data), recorded.chunk_size))}


# -- a fresh upload ----------------------------------------------------------


@pytest.mark.parametrize('parallel', [1, 3])
def test_a_file_goes_as_bounded_ranged_puts_each_with_its_digest(
        data, source_file, parallel):
    glance = SessionGlance()
    stats = uploaded(glance, source_file, parallel=parallel)
    assert_active_with(glance, data)
    puts = glance.puts()
    assert len(puts) == -(-len(data) // REQUEST)
    for _, _, headers, body in puts:
        first = int(headers['Content-Range'].split()[1].split('-')[0])
        assert len(body) <= REQUEST
        assert first % REQUEST == 0
        assert headers['Content-Digest'] == 'crc32c=:%s:' % (
            base64.b64encode(crc(body).digest()).decode())
        assert headers['X-OpenStack-Image-Size'] == str(len(data))
    assert stats['verified'] == 'sha512'
    assert (stats['sent'], stats['resumed_from']) == (len(data), 0)
    assert not list((source_file.parent / 'state').iterdir())


def test_a_byte_damaged_on_the_way_is_sent_again(data, source_file):
    glance = SessionGlance()

    def flip(body):
        return bytes([body[0] ^ 1]) + body[1:], None
    glance.faults = [flip]
    logs = []
    uploaded(glance, source_file, logs)
    assert_active_with(glance, data)
    assert any('arrived damaged' in line for line in logs), logs
    assert len(glance.puts()) == -(-len(data) // REQUEST) + 1


@pytest.mark.parametrize('pieces', [True, False])
def test_a_cut_request_is_sent_again_from_what_the_server_kept(
        data, source_file, pieces):
    """With a digest, nothing of a cut request is kept; a server without
    pieces keeps what arrived, and only the rest goes again."""
    glance = SessionGlance(pieces=pieces)
    glance.faults = [lambda body: (body, 1000)]
    stats = uploaded(glance, source_file)
    assert_active_with(glance, data)
    retry_put = glance.puts()[1]
    expected_first = 1000 if not pieces else 0
    assert retry_put[2]['Content-Range'].startswith(
        'bytes %d-%d/' % (expected_first, REQUEST - 1))
    assert stats['verified'] == 'sha512'


# -- resuming ---------------------------------------------------------------


def test_held_pieces_that_match_the_file_are_not_sent_again(
        data, source_file):
    glance = SessionGlance()
    held = (0, 3 * MiB + 5)
    glance.hold(data, held)
    logs = []
    stats = uploaded(glance, source_file, logs)
    assert_active_with(glance, data)
    assert stats['resumed_from'] == held[1]
    assert stats['sent'] == len(data) - held[1]
    assert not [c for c in glance.calls if c[0] == 'DELETE']
    assert not any('starting over' in line for line in logs)


def rewrite_start(path, data, count=MiB):
    """The first ``count`` bytes of the file rewritten: same size, new
    modification time."""
    new = os.urandom(count) + data[count:]
    path.write_bytes(new)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    return new


def test_a_rewritten_file_is_not_completed_with_the_old_bytes(
        data, source_file, capsys):
    """Interrupted at about half, the file's start rewritten (same size),
    the same command again: the server's pieces differ from the file, so
    its session is cancelled and the upload starts over; the image is the
    new file."""
    glance = SessionGlance()
    glance.interrupt_at = len(data) // 2
    argv = [IMAGE, str(source_file), '--state-dir',
            str(source_file.parent / 'state')]
    assert run_cli(glance, *argv) == 130
    assert glance.session.held[0][1] >= REQUEST
    new = rewrite_start(source_file, data)
    capsys.readouterr()
    assert run_cli(glance, *argv) == 0
    assert glance.stored == new
    assert_active_with(glance, new)
    err = capsys.readouterr().err
    assert ('the server held bytes that differ from %s: cancelled its '
            'session, starting over' % source_file) in err
    assert [c[0] for c in glance.calls].count('DELETE') == 1
    assert 'resumed from' not in err


def test_a_session_for_another_size_is_cancelled(data, source_file):
    glance = SessionGlance()
    glance.hold(data + b'x', (0, MiB))
    logs = []
    uploaded(glance, source_file, logs)
    assert_active_with(glance, data)
    assert any('is for %d bytes' % (len(data) + 1) in line
               and 'starting over' in line for line in logs), logs


def test_without_pieces_held_bytes_are_kept_only_for_the_same_file(
        data, source_file):
    """A server that lists no pieces: what it holds is trusted when this
    command's state names the file as it is (an earlier run sent them),
    and cancelled otherwise."""
    glance = SessionGlance(pieces=False)
    glance.hold(data, (0, MiB))
    logs = []
    uploaded(glance, source_file, logs)  # no state: not this file's
    assert_active_with(glance, data)
    assert any('without their digests' in line for line in logs), logs

    glance = SessionGlance(pieces=False)
    glance.hold(data, (0, MiB))
    state_dir = source_file.parent / 'state2'
    earlier = upload.Upload(connect(glance), IMAGE,
                            readers.open_source(str(source_file)),
                            state_dir=state_dir)
    earlier.source.close()
    earlier._save(force=True)
    stats = uploaded(glance, source_file, state_dir=state_dir)
    assert stats['resumed_from'] == MiB
    assert_active_with(glance, data)


def test_an_ended_session_is_not_resumed(data, source_file):
    glance = SessionGlance()
    glance.hold(data, (0, MiB))
    glance.session.end('cancelled_user')
    stats = uploaded(glance, source_file)
    assert stats['resumed_from'] == 0
    assert_active_with(glance, data)


def test_a_session_the_server_paused_is_finalized_again(data, source_file):
    """A finalize that failed for the server's own reasons leaves every
    byte held (``paused_system``): the client finalizes it."""
    glance = SessionGlance()
    glance.finalize_outcomes = ['paused']
    logs = []
    uploaded(glance, source_file, logs)
    assert_active_with(glance, data)
    assert [c[1] for c in glance.calls if c[0] == 'POST'] == [
        '/v2/images/%s/file/session/finalize' % IMAGE]
    assert any('finalizing it again' in line for line in logs), logs


# -- verification -----------------------------------------------------------


def test_an_image_whose_hash_is_not_the_files_exits_1(
        data, source_file, capsys):
    glance = SessionGlance(recorded_hash='0' * 128)
    assert run_cli(glance, IMAGE, str(source_file),
                   '--state-dir', str(source_file.parent / 's')) == 1
    err = capsys.readouterr().err
    assert 'image %s is not %s' % (IMAGE, source_file) in err
    assert '0' * 128 in err
    assert hashlib.sha512(data).hexdigest() in err
    assert 'sha512' in err


def test_the_checksum_where_glance_has_no_multihash(data, source_file):
    glance = SessionGlance(hash_algo=None)
    assert uploaded(glance, source_file)['verified'] == 'md5'


def test_another_hashing_algorithm_costs_one_more_pass(data, source_file):
    glance = SessionGlance(hash_algo='sha256')
    assert uploaded(glance, source_file)['verified'] == 'sha256'


def test_staged_data_is_verified_by_each_requests_digest(
        data, source_file):
    glance = SessionGlance()
    stats = uploaded(glance, source_file, target='stage', parallel=2)
    assert glance.record['status'] == 'uploading'
    assert glance.stored == data
    assert stats['verified'] == 'crc32c of each request'
    logs = []
    glance = SessionGlance(pieces=False)
    stats = uploaded(glance, source_file, logs, target='stage')
    assert stats['verified'] is None
    assert any('not verified' in line for line in logs), logs


def test_summary_says_what_was_verified(data, source_file, capsys):
    glance = SessionGlance()
    assert run_cli(glance, IMAGE, str(source_file), '--state-dir',
                   str(source_file.parent / 's')) == 0
    assert 'verified: sha512' in capsys.readouterr().err


# -- standard input ---------------------------------------------------------


def pipe(data, size=None):
    return readers.PipeSource(len(data) if size is None else size,
                             io.BytesIO(data))


def test_a_pipe_resumes_after_its_held_pieces_are_checked(data, tmp_path):
    glance = SessionGlance()
    glance.hold(data, (0, 2 * MiB))
    stats = uploaded(glance, pipe(data), state_dir=tmp_path)
    assert_active_with(glance, data)
    assert stats['resumed_from'] == 2 * MiB
    assert stats['verified'] == 'sha512'


def test_a_pipe_that_differs_from_the_held_pieces_completes_nothing(
        data, tmp_path):
    """The part that would complete the upload waits until every piece
    was checked: a difference at the very end still cancels the session
    before the image is complete."""
    glance = SessionGlance()
    glance.hold(data, (0, MiB), (len(data) - 1000, len(data)))
    other = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(errors.TransferError) as caught:
        uploaded(glance, pipe(other), state_dir=tmp_path)
    assert 'run the command again' in str(caught.value)
    assert glance.record['status'] == 'queued'
    assert glance.session.phase == 'cancelled_user'


@pytest.mark.parametrize('extra, message', [
    (-10, 'standard input ended at'),
    (10, 'standard input holds more than')])
@pytest.mark.parametrize('resumable', ['', '--no-resumable'])
def test_standard_input_of_another_size_exits_1(
        monkeypatch, capsys, tmp_path, data, extra, message, resumable):
    piped = tmp_path / 'piped'
    piped.write_bytes(data + os.urandom(extra) if extra > 0
                      else data[:extra])
    stdin = open(piped, 'rb')
    monkeypatch.setattr('sys.stdin', argparse.Namespace(buffer=stdin))
    glance = SessionGlance()
    argv = ['--size', str(len(data)), '--state-dir', str(tmp_path), IMAGE,
            '-'] + ([resumable] if resumable else [])
    assert run_cli(glance, *argv) == 1
    stdin.close()
    assert message in capsys.readouterr().err
    assert glance.record['status'] == 'queued'


# -- digests Glance refuses to record -----------------------------------------


@pytest.mark.parametrize('status', [403, 413])
def test_digests_glance_refuses_are_a_warning(
        data, source_file, capsys, status):
    glance = SessionGlance(patch_status=status)
    argv = [IMAGE, str(source_file), '--state-dir',
            str(source_file.parent / 's')]
    assert run_cli(glance, *argv) == 0
    err = capsys.readouterr().err
    assert 'warning: the chunk digests were not recorded' in err
    assert 'chunk digests not recorded' in err
    assert glance.stored == data
    # The upload is done: a rerun finds the image active, and does not try
    # to record them again.
    patches = [c for c in glance.calls if c[0] == 'PATCH']
    assert run_cli(glance, *argv) == 3
    assert 'active, not queued' in capsys.readouterr().err
    assert [c for c in glance.calls if c[0] == 'PATCH'] == patches


def test_a_rerun_after_a_kill_before_the_digests_checks_and_records(
        data, source_file):
    glance = SessionGlance()
    state_dir = source_file.parent / 'state'
    uploaded(glance, source_file, state_dir=state_dir)
    properties = {k: v for k, v in glance.record.items()
                  if k.startswith(manifest.PREFIX)}
    for key in properties:
        del glance.record[key]
    earlier = upload.Upload(connect(glance), IMAGE,
                            readers.open_source(str(source_file)),
                            state_dir=state_dir)
    earlier.source.close()
    earlier._save(force=True)
    logs = []
    stats = uploaded(glance, source_file, logs, state_dir=state_dir)
    assert stats['sent'] == 0 and stats['verified'] == 'sha512'
    assert any('already active' in line for line in logs)
    assert_active_with(glance, data)


# -- answers that make no sense -----------------------------------------------


def test_an_answer_that_is_not_json_exits_1(source_file, capsys):
    class NotJSON(SessionGlance):
        @webob.dec.wsgify
        def _answer(self, request):
            return webob.Response(text='<html>proxy</html>',
                                  content_type='text/html')
    assert run_cli(NotJSON(), IMAGE, str(source_file), '--state-dir',
                   str(source_file.parent / 's')) == 1
    err = capsys.readouterr().err
    assert 'not JSON' in err and 'cannot reach' not in err


def test_a_file_that_cannot_be_read_exits_1(tmp_path, capsys):
    assert run_cli(SessionGlance(), IMAGE, str(tmp_path / 'nonesuch')) == 1
    assert 'cannot read' in capsys.readouterr().err


# -- the waits ----------------------------------------------------------------


def test_every_wait_for_the_image_is_the_connections_one_loop(
        data, source_file, monkeypatch):
    waits = []
    original = connection.GlanceConnection.wait_for_image

    def recorded(self, image_id, done, **kwargs):
        waits.append(kwargs.get('wanted'))
        return original(self, image_id, done, **kwargs)
    monkeypatch.setattr(connection.GlanceConnection, 'wait_for_image',
                        recorded)
    uploaded(SessionGlance(), source_file)
    assert waits == ['active']


def test_every_request_body_is_closed_once_sent(data, source_file,
                                                monkeypatch):
    """A body refers to itself (its source is one of its methods): left to
    the garbage collector, which runs by objects made rather than bytes
    held, each kept its last piece of the file, and a 10 GiB upload's peak
    RSS grew to 147 MiB. Closed once sent, the pieces go at once."""
    bodies = []
    body = readers.FileSource.body

    def recorded(self, *args):
        bodies.append(body(self, *args))
        return bodies[-1]
    monkeypatch.setattr(readers.FileSource, 'body', recorded)
    glance = SessionGlance()
    uploaded(glance, source_file, parallel=2)
    assert_active_with(glance, data)
    assert len(bodies) == len(glance.puts()) > 1
    assert all(b.closed for b in bodies)
