"""The bounded sweep any request can trigger: no extra daemon.

At most once per :data:`INTERVAL` seconds across every process and node
(the storage decides who sweeps), it examines at most :data:`EXAMINE`
sessions and changes at most :data:`REMOVE`: a live session past its
expiry ends as ``cancelled_system`` (its data goes), and an ended one
whose retention time has passed is removed, record and all.
"""

from oslo_log import log as logging

from sizeaware import exceptions
from sizeaware.sessions import record as records

LOG = logging.getLogger(__name__)

INTERVAL = 60
EXAMINE = 256
REMOVE = 16


def reap(storage, caller, force=False):
    """Sweep ``storage`` if it is this caller's turn (or ``force``).

    :returns: how many sessions were ended or removed.
    """
    now = storage.clock()
    if not storage.claim_sweep(INTERVAL, now) and not force:
        return 0
    storage.sweep_leftovers(now)
    changed = 0
    for key, rec in storage.records(limit=EXAMINE):
        if changed >= REMOVE:
            break
        if rec.ended:
            due = rec.updated_at + storage.limits.retention <= now
        else:
            due = rec.expires_at <= now
        if not due:
            continue
        try:
            session = storage.open(key, caller)
        except exceptions.SessionNotFound:
            continue
        try:
            changed += expire(session, now)
        except exceptions.SessionNotFound:
            continue  # replaced or removed meanwhile
        except OSError:
            # The sweep serves every session; one it cannot change must
            # not fail the request that happened to run it.
            LOG.exception('Upload session sweep: cannot expire %s', key)
        finally:
            session.close()
    return changed


def expire(session, now):
    """End ``session`` if it expired, remove it if its retention passed;
    1 if it did either, 0 (also while a request writes to it)."""
    rec = session.record
    if rec.ended:
        if rec.updated_at + session.storage.limits.retention > now:
            return 0
        return session.remove(only_if_idle=True)

    def still_expired(rec):
        # Decided on the record as it is under the lock: a request may
        # have extended, written or finalized it since it was listed.
        return (rec.expires_at <= now and rec.phase != records.FINALIZING
                and not session.writing())
    return int(session.end(
        records.CANCELLED_SYSTEM,
        'The session expired: no request extended it in time.',
        only_if=still_expired))
