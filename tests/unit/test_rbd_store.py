"""``sizeaware_rbd``'s ranged reader over a stand-in for librbd.

librbd (Debian's ``python3-rbd``) is not in the tests venv, and the driver
reaches it only through ``rbd.Image(ioctx, name, snapshot=...,
read_only=True)``, its ``size()`` and ``read(offset, length)``, and
``rbd.ImageNotFound``: a small image over bytes stands in for it, and
records what was asked and that everything opened was closed. The whole
read path, through Glance on a real Ceph, is in
``tests/functional/test_rbd_reads.py``.
"""

import contextlib
import os
import types

from glance_store import exceptions
from glance_store._drivers import rbd as rbd_store
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from sizeaware.store import rbd

DATA = os.urandom(100_003)


class ImageNotFound(Exception):
    pass


class FakeRBD:
    """The part of the ``rbd`` module the driver uses, over ``images``
    (``{name: bytes}``); a read returns at most ``read_limit`` bytes."""

    ImageNotFound = ImageNotFound

    def __init__(self, images, read_limit=None):
        self.images = images
        self.read_limit = read_limit
        self.reads = []
        self.opened = []
        self.open = 0

    def Image(self, ioctx, name, snapshot=None, read_only=False):
        assert read_only and snapshot == 'snap'
        assert ioctx == 'ioctx:images'
        if name not in self.images:
            raise ImageNotFound(name)
        fake = self
        data = self.images[name]

        class Image:
            def __enter__(self):
                fake.open += 1
                fake.opened.append(name)
                return self

            def __exit__(self, *exc):
                fake.open -= 1

            def size(self):
                return len(data)

            def read(self, offset, length):
                fake.reads.append((offset, length))
                if fake.read_limit is not None:
                    length = min(length, fake.read_limit)
                return data[offset:offset + length]

        return Image()


class FakeStore:
    """What the reader uses of the store: its cluster connection."""

    pool = 'images'
    user = 'glance'
    conf_file = '/etc/ceph/ceph.conf'

    def __init__(self):
        self.connections = 0

    @contextlib.contextmanager
    def get_connection(self, conffile, rados_id):
        assert (conffile, rados_id) == (self.conf_file, self.user)
        self.connections += 1
        try:
            yield types.SimpleNamespace(open_ioctx=self._ioctx)
        finally:
            self.connections -= 1

    @contextlib.contextmanager
    def _ioctx(self, pool):
        yield 'ioctx:%s' % pool


@pytest.fixture
def fake_rbd(monkeypatch):
    fake = FakeRBD({'img': DATA})
    monkeypatch.setattr(rbd_store, 'rbd', fake)
    return fake


def location(name='img'):
    return types.SimpleNamespace(pool=None, image=name, snapshot='snap')


def reader(offset, length, piece, name='img'):
    store = FakeStore()
    return store, rbd.RangeReader(store, location(name), offset, length,
                                  piece)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_reads_exactly_the_range_in_pieces_at_their_offsets(data):
    fake = FakeRBD({'img': DATA})
    rbd_store.rbd, saved = fake, rbd_store.rbd
    try:
        offset = data.draw(st.integers(0, len(DATA)))
        length = data.draw(st.integers(0, len(DATA) - offset))
        piece = data.draw(st.integers(1, 40_000))
        store, pieces = reader(offset, length, piece)
        got = list(pieces)
    finally:
        rbd_store.rbd = saved
    assert b''.join(got) == DATA[offset:offset + length]
    assert all(len(p) <= piece for p in got)
    position = offset
    for (at, asked), p in zip(fake.reads, got):
        assert at == position
        assert asked == min(piece, offset + length - at)
        position += len(p)
    assert (fake.open, store.connections) == (0, 0)


def test_short_reads_from_librbd_are_read_on(fake_rbd):
    fake_rbd.read_limit = 1000
    _, pieces = reader(10, 50_000, 8192)
    assert b''.join(pieces) == DATA[10:50_010]


def test_a_range_past_the_image_end_raises_before_any_byte(fake_rbd):
    store, pieces = reader(len(DATA) - 10, 11, 8192)
    with pytest.raises(rbd.ShortImage):
        next(iter(pieces))
    assert fake_rbd.reads == []
    assert (fake_rbd.open, store.connections) == (0, 0)


def test_an_image_that_ends_early_raises_never_ends_short(fake_rbd):
    # librbd hands back nothing (an image shrunk while read).
    fake_rbd.read_limit = 0
    got = []
    with pytest.raises(rbd.ShortImage):
        for piece in reader(0, 1000, 100)[1]:
            got.append(piece)
    assert got == []


def test_a_missing_image_is_not_found(fake_rbd):
    with pytest.raises(exceptions.NotFound):
        list(reader(0, 10, 100, name='gone')[1])


def test_a_consumer_that_stops_early_closes_image_and_connection(fake_rbd):
    store, pieces = reader(0, len(DATA), 1000)
    iterator = iter(pieces)
    next(iterator)
    assert (fake_rbd.open, store.connections) == (1, 1)
    iterator.close()
    assert (fake_rbd.open, store.connections) == (0, 0)


def test_the_driver_declares_random_reads_and_keeps_stock_locations():
    assert rbd.StoreLocation is rbd_store.StoreLocation
    assert rbd.Store._CAPABILITIES & 0b111 == 0b111
    assert rbd.Store.OPTIONS is rbd_store.Store.OPTIONS
