"""The chunk manifest: its encoding in image properties within Glance's
limits, and the hasher that computes it as bytes pass."""

import hashlib
import os

import crc32c
import hypothesis
from hypothesis import strategies as st
import pytest

from sizeaware.client import manifest

GiB = 2**30


def _digests(count, length=manifest.DIGEST_BYTES):
    return {i: os.urandom(length) for i in range(count)}


def _crc32c(data):
    """CRC-32C as the manifest keeps it: 4 bytes, big-endian."""
    return crc32c.crc32c(data).to_bytes(4, 'big')


@hypothesis.given(size=st.integers(0, 2**50),
                  wanted=st.sampled_from([None, 2**20, 4 * 2**20, 2**26]),
                  algorithm=st.sampled_from(['crc32c', 'sha256', 'md5',
                                             'sha1']))
@hypothesis.settings(max_examples=200, deadline=None)
def test_the_manifest_round_trips_through_properties(size, wanted,
                                                     algorithm):
    chunk = manifest.chunk_size_for(size, wanted, algorithm)
    count = manifest.chunk_count(size, chunk)
    hypothesis.assume(count <= manifest.max_chunks(algorithm))
    length = manifest.digest_bytes_for(algorithm)
    assert length == (4 if algorithm == 'crc32c' else 8)
    original = manifest.Manifest(size, chunk, algorithm,
                                 _digests(count, length))
    props = original.to_properties()
    assert all(len(v) <= 255 and len(k) <= 255 for k, v in props.items())
    assert len(props) <= manifest.MAX_DIGEST_PROPERTIES + 1
    # An image record holds other keys too.
    record = dict(props, id='x', size=size, name='n')
    back = manifest.Manifest.from_properties(record, size)
    assert (back.chunk_size, back.algorithm, back.count) == (
        chunk, algorithm, count)
    assert back.digests == original.digests


@pytest.mark.parametrize('algorithm', ['crc32c', 'sha256'])
@pytest.mark.parametrize('size', [0, 1, 4 * 2**20, 10 * GiB, 100 * GiB,
                                  2**40, 2**50])
def test_any_size_fits_glance_defaults(size, algorithm):
    chunk = manifest.chunk_size_for(size, algorithm=algorithm)
    assert chunk >= manifest.MIN_CHUNK
    assert manifest.chunk_count(size, chunk) <= manifest.max_chunks(
        algorithm)
    properties, characters = manifest.footprint(size, algorithm=algorithm)
    # image_property_quota is 128 by default.
    assert properties <= manifest.MAX_DIGEST_PROPERTIES + 1 < 128


def test_the_figures_in_the_docs():
    """doc/source/client.rst quotes these."""
    assert manifest.DEFAULT_ALGORITHM == 'crc32c'
    assert manifest.chunk_size_for(10 * GiB) == 8 * 2**20
    assert manifest.footprint(10 * GiB) == (29, 7408)
    assert manifest.chunk_size_for(100 * GiB) == 128 * 2**20
    assert manifest.footprint(100 * GiB) == (19, 4656)
    assert manifest.chunk_size_for(10 * GiB, algorithm='sha256') == (
        16 * 2**20)
    assert manifest.footprint(10 * GiB, algorithm='sha256') == (29, 7417)
    assert manifest.chunk_size_for(100 * GiB, algorithm='sha256') == (
        256 * 2**20)
    assert manifest.footprint(100 * GiB, algorithm='sha256') == (19, 4661)


@pytest.mark.parametrize('change', [
    lambda p: p.update({'sizeaware_chunks': 'v2 sha256 4194304 3 8'}),
    lambda p: p.update({'sizeaware_chunks': 'v1 nosuch 4194304 3 8'}),
    lambda p: p.update({'sizeaware_chunks': 'v1 sha256 4194304 4 8'}),
    lambda p: p.update({'sizeaware_chunks': 'v1 sha256 x 3 8'}),
    lambda p: p.update({'sizeaware_chunks': 'v1 sha256 4194304 3 0'}),
    # A CRC-32C has 4 bytes, not 8.
    lambda p: p.update({'sizeaware_chunks': 'v1 crc32c 4194304 3 8'}),
    lambda p: p.update({'sizeaware_chunks_00':
                        p['sizeaware_chunks_00'][:-4]}),
])
def test_a_damaged_manifest_is_refused(change):
    size = 3 * manifest.MIN_CHUNK - 1
    props = manifest.Manifest(size, manifest.MIN_CHUNK, 'sha256',
                              digests=_digests(3)).to_properties()
    change(props)
    with pytest.raises(ValueError):
        manifest.Manifest.from_properties(props, size)


def test_no_manifest_is_none_and_an_incomplete_one_is_not_recorded():
    assert manifest.Manifest.from_properties({'name': 'x'}, 10) is None
    incomplete = manifest.Manifest(10 * 2**20, manifest.MIN_CHUNK,
                                   digests=_digests(2))
    with pytest.raises(ValueError):
        incomplete.to_properties()


@hypothesis.given(data=st.binary(max_size=5000),
                  chunk=st.integers(1, 700),
                  cuts=st.lists(st.integers(0, 5000), max_size=8),
                  resume_at=st.integers(0, 5000))
@hypothesis.settings(max_examples=200, deadline=None)
@pytest.mark.parametrize('algorithm, digest', [
    ('crc32c', _crc32c),
    ('sha256', lambda data: hashlib.sha256(data).digest()[:8]),
])
def test_the_hasher_gives_each_chunks_digest_whatever_the_pieces(
        algorithm, digest, data, chunk, cuts, resume_at):
    resume_at = min(resume_at, len(data))
    layout = manifest.Manifest(len(data), chunk, algorithm)
    expected = {i: digest(data[o:o + chunk])
                for i, o in enumerate(range(0, len(data), chunk))}
    got = {}
    # A span resumed mid-chunk: the chunk's start is read back locally.
    hasher = manifest.ChunkHasher(
        layout, resume_at, lambda i, d: got.__setitem__(i, d),
        read_at=lambda offset, count: data[offset:offset + count])
    points = sorted({resume_at, len(data), *[
        c for c in cuts if resume_at <= c <= len(data)]})
    for start, stop in zip(points, points[1:]):
        hasher.feed(data[start:stop])
    first = resume_at // chunk
    assert got == {i: d for i, d in expected.items() if i >= first}
