"""The download filter against a real Glance: ranges, validators,
verification, and unmodified standard clients that resume and split.

Each deployment of the ``glance`` fixture runs the filter with
``verify_download`` on (``conftest.DOWNLOAD_OPTIONS``) and the filesystem
store, whose files lie in ``glance.store_dirs['fs']``. Every body is
checked by sha256.
"""

import contextlib
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from tests.functional import conftest
from tests.functional import faultproxy
from tests.functional import ranges

DATA = os.urandom(2 * 2**20 + 7)
N = len(DATA)
#: Large enough for a client on a link of :data:`RATE` to be killed
#: mid-way.
BIG = os.urandom(12 * 2**20 + 3)
#: Bytes per second of the slow link (the fault proxy's rate cap).
RATE = 3 * 2**20


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def etag(data):
    return '"%s"' % hashlib.sha512(data).hexdigest()


class Uploaded:
    """An active image, and the client of the project that owns it."""

    def __init__(self, glance, data):
        self.glance = glance
        self.api = conftest.client_for(glance)
        self.image_id = self.api.create_image()
        resp = self.api.upload(self.image_id, data, size=len(data))
        assert resp.status == 204, resp
        self.data = data
        self.path = '/v2/images/%s/file' % self.image_id
        self.url = glance.url + self.path

    def get(self, **headers):
        return self.api.request('GET', self.path, headers=headers)

    @contextlib.contextmanager
    def slow_url(self):
        """The image's URL through a link of :data:`RATE` bytes per
        second."""
        with faultproxy.FaultProxy(('127.0.0.1', self.glance.port),
                                   rate=RATE) as proxy:
            yield proxy.url + self.path

    def header_args(self, flag):
        args = []
        for name, value in self.api.headers.items():
            args += [flag, '%s: %s' % (name, value)]
        return args


@pytest.fixture(scope='module')
def small(glance):
    return Uploaded(glance, DATA)


@pytest.fixture(scope='module')
def big(glance):
    return Uploaded(glance, BIG)


def assert_whole(resp, data=DATA):
    assert resp.status == 200, resp
    assert sha256(resp.body) == sha256(data)
    assert resp.headers['etag'] == etag(data)
    assert resp.headers['accept-ranges'] == 'bytes'
    assert resp.headers['content-md5'] == hashlib.md5(data).hexdigest()


# -- ranges and validators ----------------------------------------------


def test_whole_image_has_etag_and_accept_ranges(small):
    assert_whole(small.get())


RANGES = {
    'first_byte': ('bytes=0-0', 0, 1),
    'last_byte': ('bytes=%d-%d' % (N - 1, N - 1), N - 1, N),
    'middle': ('bytes=65533-200000', 65533, 200001),
    'suffix': ('bytes=-1000', N - 1000, N),
    'suffix_longer_than_image': ('bytes=-%d' % (N + 1), 0, N),
    'end_past_size': ('bytes=%d-%d' % (N - 10, N + 10), N - 10, N),
}


@pytest.mark.parametrize('case', sorted(RANGES))
def test_range_is_206_with_etag_and_without_content_md5(small, case):
    value, first, end = RANGES[case]
    resp = small.get(Range=value)
    assert resp.status == 206, resp
    assert resp.headers['content-range'] == 'bytes %d-%d/%d' % (
        first, end - 1, N)
    assert sha256(resp.body) == sha256(DATA[first:end])
    assert resp.headers['etag'] == etag(DATA)
    assert 'content-md5' not in resp.headers


@pytest.mark.parametrize('value', ['bytes=%d-' % N, 'bytes=%d-%d' % (
    N + 5, N + 9), 'bytes=-0'])
def test_unsatisfiable_range_is_416_with_content_range(small, value):
    resp = small.get(Range=value)
    assert resp.status == 416, resp
    assert resp.headers['content-range'] == 'bytes */%d' % N
    assert resp.headers['x-openstack-request-id'].startswith('req-')


@pytest.mark.parametrize('value', ['bytes=9-5', 'bytes=0-1,5-9',
                                   'pages=1-2', 'bytes=-'])
def test_range_glance_refuses_is_ignored(small, value):
    assert_whole(small.get(Range=value))


def test_if_range_fresh_gets_the_rest(small):
    resp = small.get(Range='bytes=1000-', **{'If-Range': etag(DATA)})
    assert resp.status == 206, resp
    assert sha256(resp.body) == sha256(DATA[1000:])


def test_if_range_stale_gets_the_whole_image(small):
    resp = small.get(Range='bytes=1000-', **{'If-Range': etag(b'other')})
    assert_whole(resp)


def test_if_none_match_is_304_and_if_match_other_is_412(small):
    resp = small.get(**{'If-None-Match': etag(DATA)})
    assert resp.status == 304, resp
    assert resp.body == b''
    assert resp.headers['etag'] == etag(DATA)
    resp = small.get(**{'If-Match': etag(b'other')})
    assert resp.status == 412, resp
    assert_whole(small.get(**{'If-Match': etag(DATA)}))


# -- verification -------------------------------------------------------


def stored_file(glance, image_id):
    (path,) = pathlib.Path(glance.store_dirs['fs']).rglob(image_id)
    return path


def refusal_lines(glance, image_id, timeout=10):
    """The filter's log lines about refused downloads of the image (the
    server may log after the client saw the break)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in glance.log_path.read_text(
            errors='replace').splitlines()
            if 'Refused image download' in line and image_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


@pytest.mark.parametrize('offset', [0, N // 2, N - 1])
def test_corrupt_store_file_breaks_the_download(glance, offset):
    image = Uploaded(glance, DATA)
    path = stored_file(glance, image.image_id)
    bad = bytearray(DATA)
    bad[offset] ^= 0xff
    path.write_bytes(bytes(bad))
    got = ranges.Streamed(image.api, image.image_id, keep=True)
    assert got.status == 200
    # The connection ends short of Content-Length.
    assert got.error is not None
    assert got.received < N, 'a corrupt image was delivered whole'
    assert bytes(got.body) == bytes(bad)[:got.received]
    (line,) = refusal_lines(glance, image.image_id)
    assert 'request_id=req-' in line and 'status=200 broken off' in line
    # A range is served as the store holds it: a part cannot be judged.
    resp = image.get(Range='bytes=%d-%d' % (offset, offset))
    assert resp.status == 206
    assert resp.body == bytes(bad[offset:offset + 1])


def test_truncated_store_file_breaks_the_download(glance):
    image = Uploaded(glance, DATA)
    path = stored_file(glance, image.image_id)
    path.write_bytes(DATA[:N // 3])
    got = ranges.Streamed(image.api, image.image_id)
    assert got.status == 200
    assert got.error is not None
    assert got.received < N


# -- standard clients ---------------------------------------------------


def need(tool):
    path = shutil.which(tool)
    assert path, '%s is missing: tools/install-packages installs it' % tool
    return path


def kill_midway(argv, output, size, cwd=None):
    """Run a client, then kill it with SIGKILL once ``output`` holds more
    than a quarter of ``size`` bytes (well before the end: the client's
    link carries :data:`RATE`)."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if output.exists() and output.stat().st_size > size // 4:
                break
            assert proc.poll() is None, 'the client ended: %r' % argv
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    held = output.stat().st_size
    assert 0 < held < size, held
    return held


def test_curl_resumes_after_being_killed(big, tmp_path):
    curl = need('curl')
    out = tmp_path / 'image'
    base = [curl, '-sS', '--fail', '-o', str(out)] + big.header_args('-H')
    with big.slow_url() as url:
        kill_midway(base + [url], out, len(BIG))
    done = subprocess.run(base + ['-C', '-', '-w', '%{http_code}',
                                  big.url], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '206'
    assert sha256(out.read_bytes()) == sha256(BIG)


def test_wget_resumes_after_being_killed(big, tmp_path):
    wget = need('wget')
    out = tmp_path / 'file'
    base = [wget, '-q', '-c'] + big.header_args('--header')
    with big.slow_url() as url:
        kill_midway(base + [url], out, len(BIG), cwd=tmp_path)
    done = subprocess.run(base + ['-S', big.url], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'HTTP/1.1 206' in done.stderr
    assert sha256(out.read_bytes()) == sha256(BIG)


def partial_of_another_image(tmp_path, name='image'):
    """A file holding the first half of an image the URL is not: what a
    client holds when the image behind the URL changed."""
    out = tmp_path / name
    out.write_bytes(DATA[:N // 2])
    return out


def test_curl_with_a_stale_if_range_refuses_to_splice(big, tmp_path):
    curl = need('curl')
    out = partial_of_another_image(tmp_path)
    done = subprocess.run(
        [curl, '-sS', '-o', str(out), '-C', '-', '-w', '%{http_code}',
         '-H', 'If-Range: %s' % etag(DATA)] + big.header_args('-H') + [
            big.url], capture_output=True, text=True, timeout=60)
    assert done.stdout == '200'
    # curl does not splice a 200 onto what it holds: "cannot resume".
    assert done.returncode == 33, done
    assert out.read_bytes() == DATA[:N // 2]


def test_curl_without_a_validator_splices_a_wrong_image(big, tmp_path):
    """The control: the same resume without If-Range gets a 206, and the
    file ends up neither image."""
    curl = need('curl')
    out = partial_of_another_image(tmp_path)
    done = subprocess.run(
        [curl, '-sS', '--fail', '-o', str(out), '-C', '-', '-w',
         '%{http_code}'] + big.header_args('-H') + [big.url],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '206'
    spliced = out.read_bytes()
    assert len(spliced) == len(BIG)
    assert sha256(spliced) != sha256(BIG)


def test_wget_splices_even_a_200_onto_what_it_holds(big, tmp_path):
    """wget sends no validator of its own, and given a stale If-Range it
    gets the whole image with 200, yet ``-c`` then skips as many bytes of
    that body as the file holds and appends the rest: a splice no server
    answer can prevent (doc/source/download.rst says so)."""
    wget = need('wget')
    out = partial_of_another_image(tmp_path, 'file')
    done = subprocess.run(
        [wget, '-q', '-S', '-c', '--header', 'If-Range: %s' % etag(DATA)]
        + big.header_args('--header') + [big.url], cwd=tmp_path,
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert 'HTTP/1.1 200' in done.stderr, done.stderr
    assert 'HTTP/1.1 206' not in done.stderr
    assert sha256(out.read_bytes()) == sha256(DATA[:N // 2] + BIG[N // 2:])


def test_aria2c_downloads_over_four_connections(glance, big, tmp_path):
    aria2c = need('aria2c')
    log = glance.log_path.read_text(errors='replace')
    before = len(log)
    done = subprocess.run(
        [aria2c, '-q', '-x', '4', '-s', '4', '-k', '1M', '-d',
         str(tmp_path), '-o', 'image', '--allow-overwrite=true',
         '--auto-file-renaming=false'] + [
            '--header=%s: %s' % item for item in big.api.headers.items()]
        + [big.url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sha256((tmp_path / 'image').read_bytes()) == sha256(BIG)
    # The server logs a request once it has ended on its side, which may
    # come after the client is done.
    deadline = time.monotonic() + 10
    while True:
        ranged = [line for line in glance.log_path.read_text(
            errors='replace')[before:].splitlines()
            if big.image_id + '/file' in line and ' 206' in line]
        if len(ranged) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(ranged) >= 2, ranged

