"""Resumable uploads: transfer sessions that outlive a connection.

A session holds one image's bytes for one target (``file`` or ``stage``)
until every byte is there, then hands the whole image to Glance as one
ordinary upload. The modules, each with one job:

``ranges``
    byte-range arithmetic (which bytes are held, which overlap);
``locks``
    ``fcntl`` record locks, so several Glance API processes, or nodes on
    one shared spool directory, agree on who writes what;
``record``
    the session's JSON record on disk;
``spool``
    the spool directory: sessions' data written at offsets and made
    durable, the ranges held, limits, and the bounded reaper;
``verify``
    the checks an assembled image must pass before Glance sees it;
``downstream``
    the sub-requests to Glance made with the caller's own credentials;
``ranged_put``
    the ranged-PUT protocol (``Content-Range``) on top of the above;
``tus``
    the tus 1.0 protocol on the same sessions, spool and finalize.

A third protocol (the IETF draft's resumable uploads) is another module
beside these two.
"""
