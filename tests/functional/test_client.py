"""The transfer client (``sizeaware upload`` / ``sizeaware download``, the
console script) against Glance 33 behind the run's keystone, with the
resumable and download filters, through the fault proxy.

Each test proves one of:

* a 256 MiB upload in four parallel ranged streams, cut once and stalled
  once, completes exactly: the image is ``active`` with the data's sha512,
  the server received hardly more than the image's bytes (nothing was
  sent twice but what was in flight), and the chunk digests recorded in
  the image's properties are those of the data;
* a 256 MiB download in one stream and in four, its replies cut and then
  stalled, completes exactly: the file is the image, and the client
  received hardly more than the image's bytes;
* a byte corrupted in flight is found by its chunk's digest and only that
  chunk (4 MiB) is fetched again; corruption in Glance's store is found,
  and nothing is renamed into place;
* a server that ignores ``Range`` (it answers 200) is detected: its answer
  is never spliced into the partial file, and the download starts over;
* ``kill -9`` of the client mid-upload and mid-download, in one stream and
  in four (each having made progress), then the same command, finishes
  exactly without starting over: the proxy counts the bytes of the second
  run, which are only what the server did not hold or, for a download,
  the chunks of the partial file that do not match their digests, and
  those lag what had gone through by at most what each stream had in
  flight; a download killed before it ever saved its state (within its
  first second) keeps what it wrote too;
* a 4xx ends the command with status 3 and the server's reason;
* an upload never completes an image that is not the file: a file
  rewritten after the client was killed, or bytes of another upload in
  Glance's session, are found through the session's pieces, the session
  is cancelled and the upload starts over; the image's sha512 is then the
  file's, and only then does the command succeed.
"""

import hashlib
import http.server
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import crc32c
import pytest

from sizeaware.client import download as download_mod
from sizeaware.client import manifest
from sizeaware.client import spans
from sizeaware.client import upload
from tests.functional import conftest
from tests.functional import faultproxy

MiB = 2**20
N = 256 * MiB
CHUNK = manifest.MIN_CHUNK
#: Bytes a broken connection may have had in flight to the server
#: (socket buffers), counted by the proxy but never stored.
IN_FLIGHT = 8 * MiB
#: Headers, status documents and records exchanged besides the data.
OVERHEAD = 512 * 1024
#: The rate of the slow link a client to be killed goes through, shared
#: among its streams: no run can fetch or send the image in under 8 s,
#: however loaded the machine, and so outrun its kill.
KILL_RATE = 32 * MiB
#: That client is killed once at least this much went through, each of its
#: streams having made progress.
KILL_AT = 80 * MiB
#: The rate a killed download's link drops to while the test waits for
#: the client's next state saves (the proxy reads its rate for every
#: piece): the rest of the image would take more than half a minute.
CRAWL = 4 * MiB
#: The rate the same command then goes at, through the same proxy (its
#: state names the endpoint): as good as none.
FAST = 2**40
#: The rate, shared among its streams, of a download to be killed before
#: its first state save (a second after it starts): fast enough for each
#: stream to write chunks first.
EARLY_RATE = 96 * MiB
USER = 'user1'
CLI = str(pathlib.Path(sys.executable).with_name('sizeaware'))


@pytest.fixture(scope='module')
def glance(postgres, keystone):
    """Glance 33 behind keystone, resumable uploads on."""
    with conftest.glance_behind_keystone(postgres, keystone, 'glance33client',
                                         resumable={}) as server:
        yield server


@pytest.fixture(scope='module')
def data():
    return os.urandom(N)


@pytest.fixture(scope='module')
def data_file(data, tmp_path_factory):
    path = tmp_path_factory.mktemp('client-data') / 'image.raw'
    path.write_bytes(data)
    return path


@pytest.fixture
def api(glance):
    return conftest.client_for(glance, USER)


def cli_env(glance, image_url, home):
    """The environment of a user who has sourced an openrc."""
    keystone = glance.keystone
    env = {k: v for k, v in os.environ.items() if not k.startswith('OS_')}
    env.update({
        'OS_AUTH_URL': keystone.auth_url,
        'OS_IDENTITY_API_VERSION': '3',
        'OS_USERNAME': USER,
        'OS_PASSWORD': keystone.users[USER]['password'],
        'OS_PROJECT_NAME': keystone.users[USER]['project_name'],
        'OS_USER_DOMAIN_NAME': 'Default',
        'OS_PROJECT_DOMAIN_NAME': 'Default',
        'OS_IMAGE_URL': image_url,
        'HOME': str(home),
        'XDG_CACHE_HOME': str(pathlib.Path(home) / 'cache'),
    })
    return env


def run_cli(env, *args, timeout=300):
    return subprocess.run([CLI, *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def chunk_digests(data, chunk=CHUNK):
    """The digests the manifest must hold (CRC-32C, big-endian), computed
    here independently."""
    return {i: crc32c.crc32c(data[o:o + chunk]).to_bytes(4, 'big')
            for i, o in enumerate(range(0, len(data), chunk))}


def assert_uploaded(api, image_id, data):
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['size'] == len(data)
    assert image['os_hash_value'] == hashlib.sha512(data).hexdigest()
    recorded = manifest.Manifest.from_properties(image, len(data))
    assert recorded.chunk_size == CHUNK
    assert recorded.digests == chunk_digests(data)


def fetched(result):
    """The bytes a download wrote, as its summary line says."""
    return int(re.search(r'fetched (\d+) bytes', result.stderr).group(1))


def resumed_from(result):
    """The bytes a download kept from an earlier run, as its summary line
    says."""
    found = re.search(r'resumed from (\d+)', result.stderr)
    return int(found.group(1)) if found else 0


def sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while piece := handle.read(4 * MiB):
            digest.update(piece)
    return digest.hexdigest()


def shares(parallel):
    """The spans of the image the client's ``parallel`` streams send or
    fetch from byte 0 on (whole chunks, as it splits them)."""
    share = N // parallel
    return [(s * share, (s + 1) * share) for s in range(parallel)]


def per_stream(pairs, parallel, inclusive=False):
    """How many bytes of ``pairs`` (``[start, stop)``, or ``[first,
    last]`` with ``inclusive``) fall in each stream's share."""
    pairs = [(a, b + 1) if inclusive else (a, b) for a, b in pairs]
    return [sum(max(0, min(b, stop) - max(a, start)) for a, b in pairs)
            for start, stop in shares(parallel)]


def start_cli(env, args):
    return subprocess.Popen([CLI, *args], env=env, stderr=subprocess.PIPE)


def kill_once(child, ready, timeout=120):
    """``kill -9`` the client as soon as ``ready()``; failing if it ended
    first (the slow link makes that take seconds after ``ready`` can
    first hold)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if child.poll() is not None:
            pytest.fail('the client ended (status %d) before it was killed: '
                        '%s' % (child.returncode,
                                child.stderr.read().decode()))
        assert time.monotonic() < deadline, 'the client made no progress'
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def paused(api, session, timeout=120):
    """The upload session's status once no request writes to it."""
    deadline = time.monotonic() + timeout
    while True:
        status = api.request('GET', session).json()
        if status['phase'] in ('paused', 'paused_system'):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


@pytest.fixture(scope='module')
def stored(glance, data, data_file, tmp_path_factory):
    """An image holding ``data``, uploaded by the client (so its chunk
    digests are recorded), straight to Glance."""
    home = tmp_path_factory.mktemp('client-home')
    api = conftest.client_for(glance, USER)
    image_id = api.create_image()
    result = run_cli(cli_env(glance, glance.url, home), 'upload', image_id,
                     str(data_file))
    assert result.returncode == 0, result.stderr
    assert_uploaded(api, image_id, data)
    return image_id


# -- uploads ----------------------------------------------------------------


def test_upload_in_four_streams_cut_and_stalled_completes_exactly(
        glance, api, data, data_file, tmp_path):
    image_id = api.create_image()
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.cut_at(70 * MiB)
        fired = []

        def then_stall():
            if proxy.cut.wait(60):
                fired.append('cut')  # stall_at clears proxy.cut
                proxy.stall_at(60 * MiB, 6)
        watcher = threading.Thread(target=then_stall)
        watcher.start()
        result = run_cli(cli_env(glance, proxy.url, tmp_path), 'upload',
                         '--parallel', '4', '--read-timeout', '3', image_id,
                         str(data_file))
        watcher.join()
        forwarded = proxy.forwarded
        assert fired == ['cut'] and proxy.stalled.is_set()
    assert result.returncode == 0, result.stderr
    assert_uploaded(api, image_id, data)
    # Each ranged PUT carries its digest: the cut request and the stalled
    # one lost what they had sent, at most a request's bytes each.
    assert N <= forwarded <= N + 2 * upload.REQUEST_BYTES + OVERHEAD, (
        forwarded)
    # The state file is gone once the upload is done.
    assert not list((tmp_path / 'cache' / 'sizeaware').glob('upload-*'))


def test_a_pipe_with_its_size_is_uploaded_in_parts_and_resumed(
        glance, api, data, data_file, tmp_path):
    small = data[:64 * MiB + 5]
    image_id = api.create_image()
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.cut_at(20 * MiB)
        result = subprocess.run(
            [CLI, 'upload', '--size', str(len(small)), image_id, '-'],
            input=small, env=cli_env(glance, proxy.url, tmp_path),
            capture_output=True, timeout=300)
        forwarded = proxy.forwarded
        assert proxy.cut.is_set()
    assert result.returncode == 0, result.stderr
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['os_hash_value'] == hashlib.sha512(small).hexdigest()
    recorded = manifest.Manifest.from_properties(image, len(small))
    assert recorded.digests == chunk_digests(small)
    assert forwarded <= len(small) + IN_FLIGHT + OVERHEAD


def test_a_pipe_shorter_than_its_size_is_refused_and_nothing_stored(
        glance, api, tmp_path):
    image_id = api.create_image()
    result = subprocess.run(
        [CLI, 'upload', '--size', str(10 * MiB), image_id, '-'],
        input=os.urandom(3 * MiB), env=cli_env(glance, glance.url, tmp_path),
        capture_output=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert b'standard input ended at' in result.stderr
    assert api.get_image(image_id)['status'] == 'queued'


def test_staging_leaves_the_image_uploading(glance, api, tmp_path):
    small = os.urandom(6 * MiB + 1)
    source = tmp_path / 'small.raw'
    source.write_bytes(small)
    image_id = api.create_image()
    result = run_cli(cli_env(glance, glance.url, tmp_path), 'upload',
                     '--stage', '--parallel', '2', image_id, str(source))
    assert result.returncode == 0, result.stderr
    image = api.get_image(image_id)
    assert image['status'] == 'uploading'
    assert image['size'] == len(small)
    recorded = manifest.Manifest.from_properties(image, len(small))
    assert recorded.digests == chunk_digests(small)


def test_a_plain_upload_cut_starts_again_and_completes(
        glance, api, data, tmp_path):
    small = data[:32 * MiB + 1]
    source = tmp_path / 'small.raw'
    source.write_bytes(small)
    image_id = api.create_image()
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.cut_at(10 * MiB)
        result = run_cli(cli_env(glance, proxy.url, tmp_path), 'upload',
                         '--no-resumable', image_id, str(source))
        forwarded = proxy.forwarded
        assert proxy.cut.is_set()
    assert result.returncode == 0, result.stderr
    assert 'starting again' in result.stderr
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['os_hash_value'] == hashlib.sha512(small).hexdigest()
    # Glance keeps nothing of a broken upload: all of it went again.
    assert forwarded >= 10 * MiB + len(small)


def test_upload_of_a_queued_image_of_another_project_is_refused(
        glance, data_file, tmp_path):
    other = conftest.client_for(glance, 'user2')
    image_id = other.create_image()
    result = run_cli(cli_env(glance, glance.url, tmp_path), 'upload',
                     image_id, str(data_file))
    assert result.returncode == 3, result.stderr
    assert 'refused: 404' in result.stderr
    assert other.get_image(image_id)['status'] == 'queued'


@pytest.mark.parametrize('parallel', [1, 4])
def test_killed_upload_resumes_without_starting_over(
        glance, api, data, data_file, tmp_path, parallel):
    image_id = api.create_image()
    session = '/v2/images/%s/file/session' % image_id
    env = cli_env(glance, None, tmp_path)

    def held_per_stream():
        answer = api.request('GET', session)
        if answer.status == 404:  # no byte has arrived yet
            return [0] * parallel
        return per_stream(answer.json()['ranges_held'], parallel,
                          inclusive=True)
    with faultproxy.FaultProxy(('127.0.0.1', glance.port),
                               rate=KILL_RATE // parallel) as proxy:
        env['OS_IMAGE_URL'] = proxy.url
        args = ['upload', '--parallel', str(parallel), image_id,
                str(data_file)]
        child = start_cli(env, args)
        # Killed once Glance holds bytes sent by each stream.
        kill_once(child, lambda: proxy.forwarded >= KILL_AT
                  and min(held_per_stream()) >= CHUNK)
        # The slow link still delivers what it holds, and Glance claims
        # what each broken request wrote: wait until none writes.
        status = paused(api, session)
        sent = proxy.forwarded
        held = status['bytes_held']
        assert min(per_stream(status['ranges_held'], parallel,
                              inclusive=True)) >= CHUNK, status
        # Of what reached Glance, each stream lost at most the request it
        # was sending (a request with a digest keeps nothing when cut).
        assert sent - parallel * upload.REQUEST_BYTES - OVERHEAD <= held, (
            sent, held)
        assert held <= sent, (sent, held)
        assert held < N
        assert list((tmp_path / 'cache' / 'sizeaware').glob('upload-*'))
        proxy.rate = FAST  # the second run, unhindered
        proxy.reset_counters()
        result = run_cli(env, *args)
        forwarded = proxy.forwarded
    assert result.returncode == 0, result.stderr
    assert 'resumed from %d' % held in result.stderr
    # Only the bytes Glance did not hold were sent again.
    assert N - held <= forwarded <= N - held + OVERHEAD, (held, forwarded)
    assert_uploaded(api, image_id, data)
    assert not list((tmp_path / 'cache' / 'sizeaware').glob('upload-*'))


def test_a_file_rewritten_after_a_kill_is_uploaded_again_from_its_start(
        glance, api, data, tmp_path):
    """Killed at about half, the file's first 8 MiB rewritten (same size,
    new mtime), the same command again: the bytes Glance's session holds
    are compared with the file, differ, and the session is cancelled; the
    upload starts over and the image is the new file."""
    source = tmp_path / 'disk.raw'
    source.write_bytes(data)
    image_id = api.create_image()
    session = '/v2/images/%s/file/session' % image_id
    env = cli_env(glance, None, tmp_path)
    with faultproxy.FaultProxy(('127.0.0.1', glance.port),
                               rate=KILL_RATE) as proxy:
        env['OS_IMAGE_URL'] = proxy.url
        args = ['upload', image_id, str(source)]
        kill_once(start_cli(env, args), lambda: proxy.forwarded >= N // 2)
        assert paused(api, session)['bytes_held'] >= 8 * MiB
        start = os.urandom(8 * MiB)
        with open(source, 'r+b') as handle:
            handle.write(start)
        new = start + data[8 * MiB:]
        proxy.rate = FAST
        result = run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    assert ('the server held bytes that differ from %s: cancelled its '
            'session, starting over' % source) in result.stderr
    assert 'resumed from' not in result.stderr
    assert 'verified: sha512' in result.stderr
    assert_uploaded(api, image_id, new)


@pytest.mark.parametrize('held', ['the files', 'others'])
def test_bytes_glance_holds_are_resumed_only_if_they_are_the_files(
        glance, api, tmp_path, held):
    """A ranged PUT of 8 MiB written first, then the command: of the
    file's own bytes it sends only the rest; other bytes of the same size
    have the session cancelled and the whole file sent."""
    small = os.urandom(24 * MiB + 5)
    source = tmp_path / 'small.raw'
    source.write_bytes(small)
    image_id = api.create_image()
    first = small[:8 * MiB] if held == 'the files' else os.urandom(8 * MiB)
    answer = api.request('PUT', '/v2/images/%s/file' % image_id, first, {
        'Content-Type': 'application/octet-stream',
        'Content-Range': 'bytes 0-%d/%d' % (8 * MiB - 1, len(small)),
        'X-OpenStack-Image-Size': len(small)})
    assert answer.status == 204, answer
    result = run_cli(cli_env(glance, glance.url, tmp_path), 'upload',
                     image_id, str(source))
    assert result.returncode == 0, result.stderr
    if held == 'the files':
        assert 'resumed from %d' % (8 * MiB) in result.stderr
        assert 'starting over' not in result.stderr
    else:
        assert 'the server held bytes that differ from' in result.stderr
        assert 'sent %d bytes' % len(small) in result.stderr
    image = api.get_image(image_id)
    assert image['status'] == 'active'
    assert image['os_hash_value'] == hashlib.sha512(small).hexdigest()
    recorded = manifest.Manifest.from_properties(image, len(small))
    assert recorded.digests == chunk_digests(small)


# -- downloads --------------------------------------------------------------


@pytest.mark.parametrize('parallel', ['1', '4'])
def test_download_cut_and_stalled_completes_exactly(
        glance, stored, data, tmp_path, parallel):
    target = tmp_path / 'out.raw'
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.cut_reply_at(60 * MiB)

        def then_stall():
            deadline = time.monotonic() + 60
            while not proxy.reply_faults and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.stall_reply_at(50 * MiB, 6)
        watcher = threading.Thread(target=then_stall)
        watcher.start()
        result = run_cli(cli_env(glance, proxy.url, tmp_path), 'download',
                         '--parallel', parallel, '--read-timeout', '2',
                         stored, str(target))
        watcher.join()
        delivered = proxy.delivered
        assert proxy.reply_faults == 1  # the stall, re-armed after the cut
    assert result.returncode == 0, result.stderr
    assert sha256(target) == hashlib.sha256(data).hexdigest()
    assert result.stderr.count('the download broke') == 2, result.stderr
    # The client wrote each byte once; the proxy also counts what it sent
    # to the stalled connection's buffers after the client gave up on it.
    assert fetched(result) == N, result.stderr
    assert N <= delivered <= N + IN_FLIGHT + OVERHEAD, delivered
    assert not list(tmp_path.glob('.out.raw.sizeaware-part*'))


def test_a_chunk_corrupted_in_flight_is_fetched_again_alone(
        glance, stored, data, tmp_path):
    target = tmp_path / 'out.raw'
    with faultproxy.FaultProxy(('127.0.0.1', glance.port)) as proxy:
        proxy.corrupt_reply_at(100 * MiB)
        result = run_cli(cli_env(glance, proxy.url, tmp_path), 'download',
                         stored, str(target))
        delivered = proxy.delivered
        assert proxy.reply_faults == 1
    assert result.returncode == 0, result.stderr
    assert sha256(target) == hashlib.sha256(data).hexdigest()
    assert 're-fetched %d bytes of 1 bad chunk' % CHUNK in result.stderr
    assert fetched(result) == N + CHUNK
    assert N + CHUNK <= delivered <= N + CHUNK + OVERHEAD, delivered


def test_corruption_in_the_store_is_found_and_nothing_is_renamed(
        glance, api, tmp_path):
    small = os.urandom(3 * CHUNK + 5)
    source = tmp_path / 'small.raw'
    source.write_bytes(small)
    env = cli_env(glance, glance.url, tmp_path)
    image_id = api.create_image()
    assert run_cli(env, 'upload', image_id, str(source)).returncode == 0
    stored_file = glance.store_dirs['fs'] / image_id
    with open(stored_file, 'r+b') as handle:
        handle.seek(CHUNK + 7)
        byte = handle.read(1)
        handle.seek(CHUNK + 7)
        handle.write(bytes([byte[0] ^ 1]))
    target = tmp_path / 'out.raw'
    result = run_cli(env, 'download', image_id, str(target))
    assert result.returncode == 1, result.stderr
    assert 'chunk(s) 1 stay corrupt' in result.stderr
    assert not target.exists()
    assert not list(tmp_path.glob('.out.raw.sizeaware-part*'))
    # Without the chunk digests, the whole image's sha512 finds it.
    result = run_cli(env, 'download', '--no-chunk-check', image_id,
                     str(target))
    assert result.returncode == 1, result.stderr
    assert 'differs from its recorded sha512' in result.stderr
    assert not target.exists()


def test_download_of_an_image_that_is_not_active_is_refused(
        glance, api, tmp_path):
    image_id = api.create_image()
    result = run_cli(cli_env(glance, glance.url, tmp_path), 'download',
                     image_id, str(tmp_path / 'out'))
    assert result.returncode == 3, result.stderr
    assert 'queued, not active' in result.stderr


@pytest.mark.parametrize('parallel', [1, 4])
def test_killed_download_resumes_without_starting_over(
        glance, stored, data, tmp_path, parallel):
    target = tmp_path / 'out.raw'
    part, state_path = download_mod.part_paths(target)
    env = cli_env(glance, None, tmp_path)

    def saved():
        """The units the state file lists, and the file's version."""
        try:
            version = os.stat(state_path)
            units = json.loads(state_path.read_text())['done']
        except (OSError, ValueError):
            return [], None
        return ([(i * CHUNK, min((i + 1) * CHUNK, N)) for i in units],
                (version.st_ino, version.st_mtime_ns))

    marks = {}

    def ready():
        """Once each stream's units are in the state file, what the
        client was delivered (the link slowed down to a crawl); then true
        after two more saves, the second of which began after that count
        (saves are sequential)."""
        units, version = saved()
        if 'delivered' not in marks:
            if (proxy.delivered >= KILL_AT
                    and min(per_stream(units, parallel)) >= CHUNK):
                proxy.rate = CRAWL // parallel
                marks['versions'] = [version]
                marks['delivered'] = proxy.delivered
            return False
        if version != marks['versions'][-1]:
            marks['versions'].append(version)
        return len(marks['versions']) > 2
    with faultproxy.FaultProxy(('127.0.0.1', glance.port),
                               rate=KILL_RATE // parallel) as proxy:
        env['OS_IMAGE_URL'] = proxy.url
        args = ['download', '--parallel', str(parallel), stored,
                str(target)]
        child = start_cli(env, args)
        kill_once(child, ready)
        killed_at = proxy.delivered
        units, _ = saved()
        done = spans.total(units)
        assert min(per_stream(units, parallel)) >= CHUNK, units
        # The state lags what the client had been delivered by at most
        # what each stream held in flight (a unit being written, socket
        # buffers), besides the headers and the image's record.
        lag = marks['delivered'] - done
        assert lag <= parallel * (CHUNK + IN_FLIGHT) + OVERHEAD, (
            marks['delivered'], done)
        assert done < N
        assert part.exists() and not target.exists()
        proxy.rate = FAST  # the second run, unhindered
        proxy.reset_counters()
        result = run_cli(env, *args)
        delivered = proxy.delivered
    assert result.returncode == 0, result.stderr
    # Every unit the state listed was kept, and those written since that
    # match their digests; only the rest was fetched again.
    resumed = resumed_from(result)
    assert done <= resumed <= killed_at, (done, resumed, killed_at)
    assert fetched(result) == N - resumed
    assert N - resumed <= delivered <= N - resumed + OVERHEAD, (resumed,
                                                                delivered)
    assert sha256(target) == hashlib.sha256(data).hexdigest()
    assert not part.exists() and not state_path.exists()


def written(part, data, parallel):
    """The bytes each of ``parallel`` streams had written from the start
    of its share, as the partial file holds them."""
    held = []
    with open(part, 'rb') as handle:
        for start, stop in shares(parallel):
            position = start
            while position < stop:
                handle.seek(position)
                block = handle.read(min(MiB, stop - position))
                expected = data[position:position + len(block)]
                if block != expected:
                    position += len(os.path.commonprefix([block, expected]))
                    break
                position += len(block)
            held.append(position - start)
    return held


@pytest.mark.parametrize('parallel', [1, 4])
def test_download_killed_before_its_first_save_keeps_what_it_wrote(
        glance, stored, data, tmp_path, parallel):
    """``kill -9`` within the first second, before the state file was ever
    written: the same command keeps every chunk of the partial file that
    matches its digest, and fetches at most the rest and the chunk each
    stream was writing."""
    target = tmp_path / 'out.raw'
    part, state_path = download_mod.part_paths(target)
    env = cli_env(glance, None, tmp_path)
    enough = parallel * (2 * CHUNK + CHUNK // 2)

    def ready():
        """Polled finely: the kill must come before the first save."""
        deadline = time.monotonic() + 0.1
        while proxy.delivered < enough:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True
    with faultproxy.FaultProxy(('127.0.0.1', glance.port),
                               rate=EARLY_RATE // parallel) as proxy:
        env['OS_IMAGE_URL'] = proxy.url
        args = ['download', '--parallel', str(parallel), stored,
                str(target)]
        kill_once(start_cli(env, args), ready)
        assert not state_path.exists(), (
            'the client saved its state before it was killed')
        held = written(part, data, parallel)
        proxy.rate = FAST
        proxy.reset_counters()
        result = run_cli(env, *args)
        delivered = proxy.delivered
    assert result.returncode == 0, result.stderr
    assert sha256(target) == hashlib.sha256(data).hexdigest()
    missing = N - sum(held)
    assert missing <= fetched(result) <= missing + parallel * CHUNK, (
        held, fetched(result))
    assert resumed_from(result) == N - fetched(result) >= CHUNK
    assert delivered <= fetched(result) + OVERHEAD
    assert not part.exists() and not state_path.exists()


# -- a server that ignores Range ---------------------------------------------


class IgnoresRange(http.server.ThreadingHTTPServer):
    """Serves one image's record and data as Glance's API does, but
    answers every ``GET .../file`` with 200 and the whole image, whatever
    its ``Range``; the first answer ends after ``cut`` bytes."""

    daemon_threads = True

    def __init__(self, image_id, data, cut):
        self.image_id, self.data, self.cut = image_id, data, cut
        self.ranges = []  # the Range header of each GET .../file
        self.record = {
            'id': image_id, 'status': 'active', 'size': len(data),
            'os_hash_algo': 'sha512',
            'os_hash_value': hashlib.sha512(data).hexdigest(),
            'checksum': hashlib.md5(data).hexdigest(),
            'updated_at': '2026-01-01T00:00:00Z'}
        super().__init__(('127.0.0.1', 0), _IgnoresRangeHandler)
        self.url = 'http://127.0.0.1:%d' % self.server_address[1]


class _IgnoresRangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        if self.path == '/v2/images/%s' % server.image_id:
            body = json.dumps(server.record).encode()
            self.send_response(200)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        server.ranges.append(self.headers.get('Range'))
        self.send_response(200)
        self.send_header('Content-Length', str(len(server.data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        if len(server.ranges) == 1:
            self.wfile.write(server.data[:server.cut])
            self.close_connection = True
            return
        self.wfile.write(server.data)


@pytest.mark.parametrize('parallel', ['1', '4'])
def test_a_200_to_a_ranged_request_is_never_spliced(tmp_path, parallel):
    data = os.urandom(10 * MiB + 3)
    cut = 3 * MiB + 11
    server = IgnoresRange('c0ffee', data, cut)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith('OS_')}
        target = tmp_path / 'out.raw'
        result = run_cli(env, 'download', '--os-image-url', server.url,
                         '--parallel', parallel, 'c0ffee', str(target))
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert 'not spliced' in result.stderr
    if parallel == '1':
        # Whole, cut; the rest asked for and answered 200; whole again.
        assert server.ranges == [None, 'bytes=%d-%d' % (cut, len(data) - 1),
                                 None]
    else:
        # The one-byte probe is answered 200 (cut, and thrown away): then
        # one whole-image request.
        assert server.ranges == ['bytes=0-0', None]
        assert 'does not answer ranges' in result.stderr


def test_a_client_killed_while_glance_stores_the_image_is_finished(
        glance, api, data, data_file, tmp_path):
    """Killed once every byte was sent, while its last request has Glance
    store the image (``saving``): the same command waits for Glance,
    sends nothing again and records the chunk digests."""
    image_id = api.create_image()
    env = cli_env(glance, glance.url, tmp_path)
    args = ['upload', image_id, str(data_file)]
    kill_once(start_cli(env, args),
              lambda: api.get_image(image_id)['status'] == 'saving')
    result = run_cli(env, *args)
    assert result.returncode == 0, result.stderr
    assert 'being stored from an earlier run' in result.stderr
    assert 'sent 0 bytes' in result.stderr
    assert_uploaded(api, image_id, data)
