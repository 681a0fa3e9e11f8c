"""Sessions on disk: ranges, locks, the spool's durability, limits, reaper."""

import errno
import os
import signal

import crc32c
from hypothesis import given
from hypothesis import strategies as st
import pytest

from sizeaware import exceptions
from sizeaware import framing
from sizeaware.sessions import control
from sizeaware.sessions import journal as journals
from sizeaware.sessions import limits
from sizeaware.sessions import locks
from sizeaware.sessions import ranges
from sizeaware.sessions import reaper
from sizeaware.sessions import record as records
from sizeaware.sessions.storage import blocks
from sizeaware.sessions.storage import spool as spools

IMAGE = '6f1c2a77-0000-4000-8000-000000000001'
OWNER = ('p1', 'u1')
DATA = bytes(range(256)) * 64


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def spool(tmp_path, clock):
    return spools.Spool(tmp_path / 'spool', limits.Limits(
        max_sessions_per_project=2, max_bytes=10 * len(DATA),
        inactivity_timeout=100, max_age=1000, retention=500), clock=clock)


def write(session, first, body, chunks=None, fail_with=None):
    """Write ``body`` as bytes from ``first``, the way a request does."""
    last = first + len(body) - 1
    pieces = chunks or [body]

    class Input:
        def read(self, hint):
            if not pieces:
                if fail_with is not None:
                    raise fail_with
                return b''
            piece = pieces.pop(0)
            if len(piece) > hint:
                pieces.insert(0, piece[hint:])
            return piece[:hint]

    environ = {'wsgi.input': Input(), 'CONTENT_LENGTH': str(len(body))}
    with session.writer(first, last) as stream_class:
        reader = framing.open_body(environ, len(body), False, stream_class)
        try:
            while reader.read(5):
                pass
        except (exceptions.ClientDisconnected, exceptions.ClientTimeout):
            session.commit(*reader.unclaimed(), final=False)
            raise
        return session.commit(*reader.unclaimed())


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)),
                max_size=12))
def test_ranges_add_is_the_union(pairs):
    held = []
    expected = set()
    for a, b in pairs:
        start, end = min(a, b), max(a, b)
        held = ranges.add(held, start, end)
        expected |= set(range(start, end))
    assert {i for s, e in held for i in range(s, e)} == expected
    assert all(e < s2 for (_, e), (s2, _) in zip(held, held[1:]))
    assert ranges.total(held) == len(expected)


def test_range_header_value():
    assert ranges.header_value([]) is None
    assert ranges.header_value([(0, 100), (200, 300)]) == (
        'bytes=0-99,200-299')


def test_locks_exclude_other_open_files_in_the_same_process(tmp_path):
    path = tmp_path / 'lock'
    path.touch()
    one, two = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert locks.try_acquire(one, 10, 5)
        assert not locks.try_acquire(two, 14, 1)
        assert locks.held_by_another(two, 0, 100)
        assert not locks.held_by_another(one, 0, 100)
        assert locks.try_acquire(two, 15, 5)
        locks.release(one, 10, 5)
        assert locks.try_acquire(two, 10, 5)
    finally:
        os.close(one)
        os.close(two)


def test_create_write_complete(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    half = len(DATA) // 2
    held, finalizing = write(session, half, DATA[half:])
    assert held == [(half, len(DATA))] and not finalizing
    held, finalizing = write(session, 0, DATA[:half + 10])
    assert held == [(0, len(DATA))] and finalizing
    assert session.record.phase == records.FINALIZING
    reader = session.reader()
    assert reader.read() == DATA
    reader.close()
    with pytest.raises(exceptions.UploadConflict):
        session.check_writable()
    session.close()


def test_an_ended_session_counts_none_of_its_dropped_data(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA)
    session.end(records.FINISHED_FAILURE, 'refused')
    assert not os.path.exists(os.path.join(session.path, 'data'))
    assert session.held() == []
    status = control.status(session)
    assert (status['phase'], status['error']) == ('finished_failure',
                                                  'refused')
    assert (status['bytes_held'], status['ranges_held']) == (0, [])
    assert status['pieces'] == []
    assert [p for p, _ in status['phases']] == [
        'transferring', 'finalizing', 'finished_failure']
    session.close()


def test_a_write_cut_mid_body_keeps_exactly_what_arrived(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    pieces = [DATA[1000:1333], DATA[1333:2000]]
    with pytest.raises(exceptions.ClientDisconnected):
        write(session, 1000, DATA[1000:3000], chunks=pieces,
              fail_with=ConnectionResetError(104, 'reset'))
    session.close()
    again = spool.session(IMAGE, 'file', OWNER)
    assert again.held() == [(1000, 2000)]
    status = control.status(again)
    assert status['bytes_held'] == 1000
    assert status['ranges_held'] == [[1000, 1999]]
    assert status['phase'] == 'paused_system'
    with open(os.path.join(again.path, 'data'), 'rb') as f:
        f.seek(1000)
        assert f.read(1000) == DATA[1000:2000]
    again.close()


def test_bytes_differing_from_those_held_are_refused(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA[:100])
    wrong = DATA[50:99] + b'x' + DATA[100:200]
    with pytest.raises(exceptions.UploadConflict):
        write(session, 50, wrong)
    assert session.held() == [(0, 100)]
    reader = session.reader()
    assert reader.read(100) == DATA[:100]
    reader.close()
    session.close()


def test_two_writers_of_the_same_bytes_conflict(spool):
    one = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    two = spool.session(IMAGE, 'file', OWNER)
    with one.writer(0, 99):
        with pytest.raises(exceptions.UploadConflict):
            with two.writer(99, 200):
                pass
        with two.writer(100, 200):
            assert control.status(two)['phase'] == 'transferring'
    one.close()
    two.close()


def test_every_claim_is_a_piece_with_its_crc32c(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA[:10])
    write(session, 100, DATA[100:300], chunks=[DATA[100:150],
                                               DATA[150:300]])
    assert journals.read_pieces(os.path.join(session.path, 'pieces')) == [
        (0, 10, crc32c.crc32c(DATA[:10])),
        (100, 300, crc32c.crc32c(DATA[100:300]))]
    assert control.status(session)['pieces'] == [
        [0, 9, '%08x' % crc32c.crc32c(DATA[:10])],
        [100, 299, '%08x' % crc32c.crc32c(DATA[100:300])]]
    assert not [n for n in os.listdir(session.path) if '.tmp.' in n]
    session.close()


def test_a_torn_last_piece_is_the_logs_end_and_is_written_over(tmp_path):
    path = str(tmp_path / 'pieces')
    journals.append_piece(path, 0, 10, 7)
    with open(path, 'ab') as f:
        f.write(b'torn entry')
    assert journals.read_pieces(path) == [(0, 10, 7)]
    journals.append_piece(path, 10, 20, 8)
    assert journals.read_pieces(path) == [(0, 10, 7), (10, 20, 8)]
    assert os.path.getsize(path) == 2 * 24


def test_limits(spool):
    spool.create('a', 'file', OWNER, len(DATA)).close()
    spool.create('b', 'file', OWNER, len(DATA)).close()
    with pytest.raises(exceptions.TooManySessions):
        spool.create('c', 'file', OWNER, len(DATA))
    with pytest.raises(exceptions.SpoolFull):
        spool.create('d', 'file', ('p2', 'u'), 9 * len(DATA))
    spool.create('d', 'file', ('p2', 'u'), 8 * len(DATA)).close()


def test_expiry_and_the_bounded_reaper(spool, clock):
    for name in ('a', 'b'):
        spool.create(name, 'file', OWNER, 10).close()
    clock.now += 50
    kept = spool.session('b', 'file', OWNER)
    kept.touch()
    kept.close()
    clock.now += 60
    assert reaper.reap(spool, OWNER) == 1
    assert spool.session('a', 'file', OWNER) is None
    ended = spool.session('a', 'file', OWNER, ended=True)
    assert ended.record.phase == records.CANCELLED_SYSTEM
    assert 'expired' in ended.record.error
    ended.close()
    assert spool.session('b', 'file', OWNER) is not None
    clock.now += 30
    assert reaper.reap(spool, OWNER) == 0  # swept less than INTERVAL ago
    clock.now += 1000
    assert spool.session('b', 'file', OWNER) is None
    # Ended, their records are kept for the retention time, then removed.
    assert sorted(n for n in os.listdir(spool.directory)
                  if not n.startswith('.')) == ['a.file', 'b.file']
    clock.now += 500
    assert reaper.reap(spool, OWNER) == 2
    assert [n for n in os.listdir(spool.directory)
            if not n.startswith('.')] == []


def test_a_session_being_written_is_not_reaped(spool, clock):
    session = spool.create('a', 'file', OWNER, 10)
    other = spool.session('a', 'file', OWNER)
    with other.writer(0, 4):
        clock.now += 2000
        assert reaper.reap(spool, OWNER, force=True) == 0
    assert reaper.reap(spool, OWNER, force=True) == 1
    session.close()
    other.close()


def test_max_age_caps_extension(spool, clock):
    session = spool.create('a', 'file', OWNER, 10)
    for _ in range(12):
        clock.now += 90
        session.touch()
    assert session.record.expires_at == session.record.created_at + 1000
    session.close()


def test_removed_session_is_gone_for_a_request_holding_it(spool):
    session = spool.create('a', 'file', OWNER, 10)
    other = spool.session('a', 'file', OWNER)
    assert session.remove() == 1
    with pytest.raises(exceptions.SessionNotFound):
        other.commit(0, 5, 0)
    session.close()
    other.close()


def test_unknown_image_ids_name_no_directory(spool):
    with pytest.raises(exceptions.ImageNotFound):
        spool.session('../etc', 'file', OWNER)


def test_another_owner_finds_no_session_and_harms_none(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA[:10])
    session.close()
    for other in (('p2', 'u1'), ('p1', 'u2')):
        with pytest.raises(exceptions.SessionNotFound):
            spool.session(IMAGE, 'file', other)
        with pytest.raises(exceptions.SessionNotFound):
            spool.create(IMAGE, 'file', other, len(DATA), None)
    mine = spool.session(IMAGE, 'file', OWNER)
    assert mine.held() == [(0, 10)]
    assert mine.record.phase == records.TRANSFERRING
    mine.close()


def _source(pieces):
    pieces = list(pieces)
    return lambda hint: pieces.pop(0)


def _killed_mid_write(spool, first, pieces):
    """A child process writes ``pieces`` from ``first`` in a request and
    is killed (SIGKILL) before it claims them."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            session = spool.session(IMAGE, 'file', OWNER)
            body = b''.join(pieces)
            with session.writer(first, first + len(body) - 1 + 100) as cls:
                writer = cls(_source(pieces), len(body) + 100)
                for piece in pieces:
                    writer.read(len(piece))
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_a_killed_writer_keeps_what_reached_the_spool(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA[:100])
    session.close()
    pieces = [DATA[1000:1500], DATA[1500:1600], DATA[1600:2000]]
    _killed_mid_write(spool, 1000, pieces)
    session = spool.session(IMAGE, 'file', OWNER)
    # Nothing claimed yet, but its journal is there, unlocked.
    assert session.held() == [(0, 100)]
    status = control.status(session)
    assert status['ranges_held'] == [[0, 99], [1000, 1999]]
    assert status['pieces'][1] == [1000, 1999, '%08x' % crc32c.crc32c(
        DATA[1000:2000])]
    assert status['phase'] == 'paused_system'
    assert not [n for n in os.listdir(session.path)
                if n.startswith('journal.')]
    reader = session.reader()
    assert reader.read(2000)[1000:] == DATA[1000:2000]
    reader.close()
    session.close()


def test_a_killed_writer_claims_no_piece_that_is_not_on_disk(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    session.close()
    _killed_mid_write(spool, 0, [DATA[:500], DATA[500:600], DATA[600:900]])
    session = spool.session(IMAGE, 'file', OWNER)
    # The second piece never reached the disk as it was written.
    with open(os.path.join(session.path, 'data'), 'r+b') as f:
        f.seek(550)
        f.write(b'\0')
    assert control.status(session)['ranges_held'] == [[0, 499]]
    session.close()


def test_a_live_writers_journal_is_left_alone(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    other = spool.session(IMAGE, 'file', OWNER)
    with session.writer(0, 99) as cls:
        writer = cls(_source([DATA[:50]]), 100)
        writer.read(50)
        assert control.status(other)['ranges_held'] == []
        assert control.status(other)['phase'] == 'transferring'
    session.close()
    other.close()


def test_a_finalize_whose_worker_died_can_be_retried(spool):
    session = spool.create(IMAGE, 'file', OWNER, 10, None)
    held, finalizing = write(session, 0, DATA[:10])
    assert finalizing and session.finalizer
    other = spool.session(IMAGE, 'file', OWNER)
    # While the finalizer lives, the session stays finalizing.
    assert control.status(other)['phase'] == 'finalizing'
    with pytest.raises(exceptions.UploadConflict):
        other.check_writable()
    session.close()  # the finalizer's worker dies: its locks go
    status = control.status(other)
    assert status['phase'] == 'paused_system'
    assert status['bytes_held'] == 10
    assert 'interrupted' in status['error']
    other.check_writable()
    held, finalizing = write(other, 9, DATA[9:10])
    assert finalizing and other.finalizer
    assert other.record.phase == records.FINALIZING
    other.close()


def test_a_claim_already_held_when_another_request_completed_is_kept(spool):
    """Parallel streams: one stream's bytes were all claimed at its
    checkpoints, another completed the image; the first one's last claim
    is not a conflict."""
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    half = len(DATA) // 2
    session.commit(0, half, crc32c.crc32c(DATA[:half]), final=False)
    other = spool.session(IMAGE, 'file', OWNER)
    held, finalizing = write(other, half, DATA[half:])
    assert finalizing
    held, finalizing = session.commit(0, half, crc32c.crc32c(DATA[:half]))
    assert held == [(0, len(DATA))] and not finalizing
    assert session.record.phase == records.FINALIZING


def test_the_reaper_takes_a_creation_renaming_its_new_entry_in_stride(
        spool, monkeypatch):
    """A creation renames its ``.new.`` entry away between the reaper's
    listing and its look at it: no FileNotFoundError reaches anyone."""
    spool.create('a', 'file', OWNER, 10).close()
    listdir = os.listdir

    def listing_with_a_vanished_entry(path):
        return listdir(path) + ['.new.0123456789abcdef']
    monkeypatch.setattr(spools.os, 'listdir', listing_with_a_vanished_entry)
    assert reaper.reap(spool, OWNER, force=True) == 0


def test_a_session_of_an_earlier_release_keeps_its_ranges(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    with open(os.path.join(session.path, 'data'), 'wb') as f:
        f.write(DATA[:300])
    with open(os.path.join(session.path, 'ranges.json'), 'w') as f:
        f.write('[[0, 100], [200, 300]]')
    assert control.status(session)['pieces'] == [
        [0, 99, '%08x' % crc32c.crc32c(DATA[:100])],
        [200, 299, '%08x' % crc32c.crc32c(DATA[200:300])]]
    assert not os.path.exists(os.path.join(session.path, 'ranges.json'))
    session.close()


def test_an_ended_session_stays_as_it_ended(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    write(session, 0, DATA[:10])
    other = spool.session(IMAGE, 'file', OWNER)
    other.cancel()
    # A finalize failing late (Glance's trouble) cannot revive it.
    session.set_phase(records.PAUSED_SYSTEM, 'Glance answered 503')
    assert control.status(session)['phase'] == 'cancelled_user'
    assert not session.end(records.FINISHED_SUCCESS)
    assert control.status(session)['phase'] == 'cancelled_user'
    with pytest.raises(exceptions.SessionNotFound):
        other.cancel()
    session.close()
    other.close()


def test_a_cancel_while_another_request_finalizes_is_refused(spool):
    session = spool.create(IMAGE, 'file', OWNER, 10, None)
    assert write(session, 0, DATA[:10])[1]
    other = spool.session(IMAGE, 'file', OWNER)
    with pytest.raises(exceptions.UploadConflict, match='being finalized'):
        other.cancel()
    session.close()  # the finalizer's worker dies: the cancel goes ahead
    other.cancel()
    assert other.record.phase == records.CANCELLED_USER
    other.close()


def test_the_reaper_does_not_expire_a_session_extended_since_listed(
        spool, clock):
    session = spool.create('a', 'file', OWNER, 10)
    clock.now += 150
    listed = spool.open(session.path, OWNER)  # as the sweep found it
    session.touch()  # a request extends it meanwhile
    assert reaper.expire(listed, clock.now) == 0
    assert control.status(session)['phase'] == 'paused_system'
    listed.close()
    session.close()


def test_a_writer_whose_session_ended_leaves_no_error_behind(spool):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    other = spool.session(IMAGE, 'file', OWNER)
    with session.writer(0, 99) as cls:
        other.cancel()
        writer = cls(_source([DATA[:50]]), 100)
        writer.read(50)
        # Its journal names bytes of a session that ended: nothing to
        # claim, nothing to fail on.
        assert control.status(other)['phase'] == 'cancelled_user'
    session.close()
    other.close()


def test_a_full_disk_is_507_and_keeps_what_was_written(spool,
                                                       monkeypatch):
    session = spool.create(IMAGE, 'file', OWNER, len(DATA), None)
    pwrite = blocks.LocalFile.pwrite
    written = [0]

    def disk_fills(data_file, data, offset):
        if written[0] >= 300:
            raise OSError(errno.ENOSPC, 'No space left on device')
        written[0] += len(data)
        return pwrite(data_file, data, offset)
    monkeypatch.setattr(blocks.LocalFile, 'pwrite', disk_fills)
    with session.writer(0, 999) as cls:
        writer = cls(_source([DATA[i:i + 100] for i in range(0, 1000, 100)]),
                     1000)
        with pytest.raises(exceptions.SpoolFull, match='disk is full'):
            writer.read(1000)
        monkeypatch.undo()
        # What the receive flow does with it: claims what was written.
        session.commit(*writer.unclaimed(), final=False)
    assert session.held() == [(0, 300)]
    session.close()
