"""The one place digests are made.

Almost every digest this project computes checks data against accidents
(a bit flipped on a link, a piece lost in a restart, a file changed between
two runs), not against an attacker, so it is made with
``usedforsecurity=False``: a FIPS host refuses ``md5`` (and in some modes
``sha1``) otherwise, and tus clients ask for both. The whole-image hashes
Glance records (``os_hash_algo``) are compared the same way; they are no
signature either.

CRC-32C is computed in hardware by the ``crc32c`` package and has the
hashlib interface (``update``, ``digest``, ``hexdigest``, ``copy``,
``name``, ``digest_size``), so every caller treats it like the others.

Names are accepted in hashlib's spelling (``sha256``) and in the spelling
of the HTTP digest fields registry (RFC 9530: ``sha-256``, ``sha-512``,
``crc32c``) and of tus (``sha1``, ``md5``).
"""

import hashlib

import crc32c

#: RFC 9530 and tus names for hashlib's.
_ALIASES = {'sha-256': 'sha256', 'sha-512': 'sha512', 'sha': 'sha1'}


def canonical(name):
    """hashlib's spelling of a digest name, lower-case."""
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def new(name, data=b''):
    """A hashlib-like object for ``name``.

    :raises ValueError: for an algorithm this Python does not have.
    """
    name = canonical(name)
    if name == 'crc32c':
        digest = crc32c.CRC32CHash()
    else:
        try:
            digest = hashlib.new(name, usedforsecurity=False)
        except TypeError as exc:
            # An OpenSSL without the flag; hashlib never raises TypeError
            # for a name.
            raise ValueError('unsupported digest %r' % name) from exc
    if data:
        digest.update(data)
    return digest


def available(name):
    """Whether :func:`new` makes ``name`` here."""
    try:
        new(name)
    except ValueError:
        return False
    return True


def crc32c_hex(data, value=0):
    """The CRC-32C of ``data`` (continuing ``value``), as 8 hex digits."""
    return '%08x' % crc32c.crc32c(data, value)
