"""The transfer client's logic: range arithmetic, the checks made on
answers before splicing, state files, request bodies, the whole-image
hasher and the command line."""

import hashlib
import os
import stat
import time

import hypothesis
from hypothesis import strategies as st
import pytest
import requests

from sizeaware.client import answers
from sizeaware.client import connection
from sizeaware.client import download
from sizeaware.client import errors
from sizeaware.client import readers
from sizeaware.client import spans
from sizeaware.client import state
from sizeaware.cmd import transfer

# -- spans ------------------------------------------------------------------


def _covered(pairs):
    return {b for a, z in pairs for b in range(a, z)}


@hypothesis.given(size=st.integers(0, 300),
                  held=st.lists(st.tuples(st.integers(0, 299),
                                          st.integers(0, 40)), max_size=6))
def test_missing_is_the_complement_of_what_is_held(size, held):
    inclusive = [(a, a + n) for a, n in held]
    gaps = spans.missing(inclusive, size)
    held_bytes = {b for a, z in inclusive for b in range(a, z + 1)}
    assert _covered(gaps) == set(range(size)) - held_bytes
    assert all(a < z for a, z in gaps)
    assert gaps == sorted(gaps)


@hypothesis.given(size=st.integers(1, 5000), parts=st.integers(1, 8),
                  align=st.integers(1, 300),
                  held=st.lists(st.tuples(st.integers(0, 4999),
                                          st.integers(0, 400)), max_size=4))
def test_split_covers_the_same_bytes_on_aligned_cuts(size, parts, align,
                                                     held):
    todo = spans.missing([(a, a + n) for a, n in held], size)
    work = spans.split(todo, parts, align)
    assert _covered(work) == _covered(todo)
    assert spans.total(work) == spans.total(todo)
    edges = {a for a, _ in todo} | {z for _, z in todo}
    for start, stop in work:
        assert start < stop
        assert start in edges or start % align == 0


def test_split_gives_each_stream_a_share():
    work = spans.split([(0, 100 * 4)], 4, 4)
    assert work == [(0, 100), (100, 200), (200, 300), (300, 400)]
    assert spans.split([(0, 10)], 4, 8) == [(0, 8), (8, 10)]


def test_runs_joins_neighbouring_units():
    assert spans.runs([0, 1, 3, 4, 5], 10, 55) == [(0, 20), (30, 55)]
    assert spans.runs([], 10, 55) == []


# -- answers ----------------------------------------------------------------


SIZE = 1000
ETAG = '"abc"'


def test_without_an_etag_the_record_is_compared():
    first = {'size': 5, 'os_hash_value': 'a', 'checksum': 'c',
             'updated_at': 't', 'status': 'active'}
    answers.same_record(first, dict(first, name='renamed'))
    for key in ('size', 'os_hash_value', 'updated_at', 'status'):
        with pytest.raises(errors.ImageChanged):
            answers.same_record(first, dict(first, **{key: 'other'}))


class _Response:
    def __init__(self, status, text='', content_type='text/plain'):
        self.status_code, self.text = status, text
        self.headers = {'Content-Type': content_type}


@pytest.mark.parametrize('status, error', [
    (200, None), (204, None), (206, None),
    (500, errors.Transient), (503, errors.Transient),
    (408, errors.Transient), (429, errors.Transient),
    (400, errors.Refused), (403, errors.Refused), (404, errors.Refused),
    (409, errors.Refused), (416, errors.Refused)])
def test_statuses_are_retried_or_refused(status, error):
    response = _Response(status, 'some\n  reason')
    if error is None:
        answers.raise_for_status(response, 'GET')
        return
    with pytest.raises(error) as caught:
        answers.raise_for_status(response, 'GET')
    assert 'some reason' in str(caught.value)


def test_an_html_error_page_gives_its_reason_without_markup():
    """webob's page, as Glance answers a client that accepts anything."""
    page = ('<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n'
            ' <body>\n  <h1>404 Not Found</h1>\n  No upload session for '
            'this image.<br /><br />\n\n\n\n </body>\n</html>')
    with pytest.raises(errors.Refused) as caught:
        answers.raise_for_status(
            _Response(404, page, 'text/html; charset=UTF-8'), 'GET session')
    assert str(caught.value).endswith(
        'GET session answered 404 No upload session for this image.')


# -- state files ------------------------------------------------------------


def test_state_is_saved_atomically_and_a_damaged_one_ignored(tmp_path):
    path = tmp_path / 'sub' / 'upload-x.json'
    assert state.load(path) is None
    state.save(path, {'done': [1, 2]})
    assert state.load(path) == {'done': [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    path.write_text('{"done": [1,')  # torn by hand
    assert state.load(path) is None
    path.write_text('[1, 2]')
    assert state.load(path) is None
    state.remove(path)
    state.remove(path)
    assert not path.exists()


def test_a_state_save_syncs_the_file_then_its_directory(tmp_path,
                                                        monkeypatch):
    """The rename is durable only once the directory is synced."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)
    monkeypatch.setattr(os, 'fsync', fsync)
    state.save(tmp_path / 'upload-x.json', {'a': 1})
    assert synced == [False, True]


def test_each_state_save_writes_a_temporary_file_of_its_own(tmp_path,
                                                             monkeypatch):
    """Two writers of one state (two runs of a command) never write the
    same temporary file; what a killed one left is removed with the
    state."""
    path = tmp_path / 'upload-x.json'
    temporaries = []
    real_replace = os.replace

    def replace(source, destination):
        temporaries.append(str(source))
        real_replace(source, destination)
    monkeypatch.setattr(os, 'replace', replace)
    state.save(path, {'a': 1})
    state.save(path, {'a': 2})
    assert len(set(temporaries)) == 2
    assert str(path) + '.tmp' not in temporaries
    leftover = tmp_path / ('.%s.killed.tmp' % path.name)
    leftover.write_text('{')
    state.remove(path)
    assert list(tmp_path.iterdir()) == []


def test_each_upload_has_its_own_state_file(tmp_path):
    names = {state.upload_path(tmp_path, e, i, t)
             for e in ('http://a', 'http://b') for i in ('1', '2')
             for t in ('file', 'stage')}
    assert len(names) == 8


def test_the_default_state_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert state.default_dir() == tmp_path / 'sizeaware'


# -- request bodies ---------------------------------------------------------


def test_a_file_span_is_framed_with_content_length(tmp_path):
    path = tmp_path / 'f'
    data = os.urandom(3 * readers.FileSpan.PIECE + 17)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        seen = []
        body = readers.FileSpan(fd, 100, len(data) - 5, seen.append)
        prepared = requests.Request('PUT', 'http://h/', data=body).prepare()
        assert prepared.headers['Content-Length'] == str(len(data) - 105)
        assert 'Transfer-Encoding' not in prepared.headers
        out = b''
        while piece := body.read(16384):
            out += piece
        assert out == data[100:-5]
        assert b''.join(bytes(s) for s in seen) == out
    finally:
        os.close(fd)


def test_a_file_that_shrank_is_a_short_body(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        body = readers.FileSpan(fd, 0, 20)
        with pytest.raises(errors.TransferError) as caught:
            while body.read(4):
                pass
        assert 'changed during the upload' in str(caught.value)
    finally:
        os.close(fd)


# -- the whole-image hasher -------------------------------------------------


def test_the_whole_hasher_follows_the_ground_given(tmp_path):
    data = os.urandom(10 * 2**20 + 7)
    path = tmp_path / 'f'
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = download.WholeHasher('sha512', fd)
        hasher.advance_to(4000)
        hasher.advance_to(3000)  # never backwards
        hasher.advance_to(5 * 2**20)
        assert hasher.finish(len(data)) == hashlib.sha512(data).hexdigest()
        assert hasher.cursor == len(data)
    finally:
        os.close(fd)


def test_the_whole_hasher_hashes_nothing_past_the_ground_given(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'a' * 100 + b'BAD' + b'c' * 97)
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = download.WholeHasher('sha256', fd)
        hasher.advance_to(100)
        deadline = time.monotonic() + 10
        while hasher.cursor < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hasher.cursor == 100
        os.pwrite(fd, b'bbb', 100)  # the bad chunk fetched again
        assert hasher.finish(200) == hashlib.sha256(
            b'a' * 100 + b'bbb' + b'c' * 97).hexdigest()
    finally:
        os.close(fd)


def test_good_units_held_in_memory_are_hashed_from_there(tmp_path,
                                                       monkeypatch):
    """Held bytes are hashed instead of the file's (here they differ, to
    tell which was read); bytes past the memory budget, or held after the
    hash went past them, are read back from the file."""
    monkeypatch.setattr(download, 'HOLD_BYTES', 30)
    path = tmp_path / 'f'
    path.write_bytes(b'f' * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = download.WholeHasher('sha256', fd)
        hasher.hold(0, [b'm' * 10, memoryview(b'M' * 10)])
        hasher.hold(40, [b'n' * 20])  # over the budget: read back
        hasher.advance_to(20)
        deadline = time.monotonic() + 10
        while hasher.cursor < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        hasher.hold(60, [b'o' * 20])
        hasher.hold(10, [b'p' * 10])  # behind the hash: ignored
        assert hasher.finish(100) == hashlib.sha256(
            b'm' * 10 + b'M' * 10 + b'f' * 40 + b'o' * 20 + b'f' * 20
        ).hexdigest()
        assert (hasher.from_memory, hasher.read_back) == (40, 60)
    finally:
        os.close(fd)


def test_a_short_partial_file_is_an_integrity_error(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = download.WholeHasher('sha256', fd)
        with pytest.raises(errors.IntegrityError):
            hasher.finish(20)
    finally:
        os.close(fd)


def test_partial_files_live_beside_the_destination(tmp_path):
    part, state_path = download.part_paths(tmp_path / 'disk.raw')
    assert part == tmp_path / '.disk.raw.sizeaware-part'
    assert state_path == tmp_path / '.disk.raw.sizeaware-part.json'


# -- connection and command line ---------------------------------------------


@pytest.mark.parametrize('url', ['http://g:9292', 'http://g:9292/',
                                 'http://g:9292/v2', 'http://g:9292/v2/',
                                 'http://g:9292/v2.16'])
def test_the_image_endpoint_is_its_root(url):
    assert connection.root_url(url) == 'http://g:9292'


def test_headers_are_name_colon_value():
    assert connection.parse_header('X-Roles: a, b') == ('X-Roles', 'a, b')
    with pytest.raises(ValueError):
        connection.parse_header('nocolon')


def test_without_credentials_an_image_url_means_no_token(monkeypatch):
    for name in list(os.environ):
        if name.startswith('OS_'):
            monkeypatch.delenv(name)
    conn = connection.GlanceConnection.from_config(
        image_url='http://g:9292/v2', headers={'X-A': '1'})
    assert conn.endpoint == 'http://g:9292'
    assert conn.authenticated is False
    assert conn.headers == {'X-A': '1'}


@pytest.mark.parametrize('text, value', [
    ('123', 123), ('4k', 4096), ('4M', 4 * 2**20), ('2GiB', 2 * 2**30),
    ('1t', 2**40)])
def test_sizes_on_the_command_line(text, value):
    args = transfer.build_parser().parse_args(
        ['upload', '--size', text, 'img', '-'])
    assert args.size == value


def test_the_help_reads_like_a_manual(capsys):
    with pytest.raises(SystemExit):
        transfer.build_parser().parse_args(['--help'])
    out = capsys.readouterr().out
    for word in ('exit status', 'examples', 'OS_IMAGE_URL', 'upload',
                 'download', 'killed'):
        assert word in out
    with pytest.raises(SystemExit):
        transfer.build_parser().parse_args(['upload', '--help'])
    out = capsys.readouterr().out
    for word in ('--os-cloud', '--read-timeout', '--size', '--parallel',
                 '--state-dir'):
        assert word in out


@pytest.mark.parametrize('argv', [
    ['upload', '--parallel', '0', 'img', 'f'],
    ['upload', '--chunk-size', '1M', 'img', 'f'],
    ['upload', '--size', 'lots', 'img', '-'],
    ['download', 'img'],
    ['copy', 'img', 'f']])
def test_bad_usage_exits_2(capsys, argv):
    with pytest.raises(SystemExit) as caught:
        transfer.main(argv)
    assert caught.value.code == 2


def test_an_unreachable_glance_exits_1(capsys, monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith('OS_'):
            monkeypatch.delenv(name)
    code = transfer.main(['download', '--os-image-url',
                          'http://127.0.0.1:9', '--connect-timeout', '1',
                          'img', str(tmp_path / 'out')])
    assert code == 1
    assert 'cannot reach Glance' in capsys.readouterr().err


def test_the_console_script_is_the_command():
    from importlib import metadata
    (entry,) = [e for e in metadata.entry_points(group='console_scripts')
                if e.name == 'sizeaware']
    assert entry.load() is transfer.main
