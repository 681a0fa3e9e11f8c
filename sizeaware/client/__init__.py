"""The transfer client: uploads and downloads of Glance images that survive
broken connections, a killed client, and corrupted chunks.

``connection`` is the one Glance HTTP client (keystoneauth1 sessions,
openstacksdk's configuration loading); ``upload`` and ``download`` are the
two transfers; ``manifest`` encodes per-chunk digests into image
properties; ``spans`` and ``answers`` hold the range arithmetic and the
checks made on every answer before a byte of it is kept; ``state`` keeps
what a transfer needs to resume after the process was killed; ``retry``
and ``progress`` are what the transfers share. ``sizeaware.cmd.transfer``
is the command line over it.
"""
