"""Resumable uploads: transfer sessions that outlive a connection.

A session holds one image's bytes for one target (``file`` or ``stage``)
until every byte is there, then hands the whole image to Glance: as one
ordinary upload from the spool, or, for a store-native session written
straight into its RBD or S3 store, by its location. The modules, each with one
job:

``ranges``
    byte-range arithmetic (which bytes are held, which overlap, which are
    missing);
``locks``
    ``fcntl`` record locks, so several Glance API processes, or nodes on
    one shared spool directory, agree on who writes what;
``record``
    the session's record: owner, size, phase and the history of phases;
``journal``
    the pieces log (each claim with its CRC-32C) and the writers'
    journals that let a killed worker's bytes be claimed;
``limits``
    what a project and a storage may hold, checked before a session is
    created;
``reaper``
    the bounded sweep any request triggers: expiry and retention;
``storage``
    the interface every session storage implements, and its
    implementations: ``storage.ledger`` (a session's rules, once, over a
    ledger's primitives), ``storage.spool`` (a directory on the API node
    or a shared filesystem), ``storage.cluster`` (store-native sessions'
    ledger in the RBD pool), ``storage.in_store`` (their RBD images),
    ``storage.blocks`` (bytes at offsets, wherever they are),
    ``storage.bucket`` (S3 store-native sessions, in their bucket),
    ``storage.routed`` (which of them holds a session);
``locations``
    Glance's location API, with the service token the operator grants;
``receive``
    the one receive flow every protocol shares: a body into a session,
    kept on disconnect, checked against a declared digest, claimed,
    finalized;
``checks``
    the verdicts an assembled image must pass before Glance has it;
``finalize``
    handing a complete session to Glance, and what a failure does to it;
``control``
    the session's own URL: status document, pause, resume, extend,
    finalize, cancel;
``downstream``
    the sub-requests to Glance made with the caller's own credentials;
``protocols``
    ranged PUT (``Content-Range``) and tus 1.0, each only translating its
    requests into the receive flow.
"""
