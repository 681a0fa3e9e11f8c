"""The transfer client's errors: what ends a transfer, and why."""


class TransferError(Exception):
    """A transfer cannot go on; the message says why, for a person."""


class Refused(TransferError):
    """The server answered a 4xx: retrying the same request cannot help."""

    def __init__(self, status, message):
        super().__init__('%d: %s' % (status, message))
        self.status = status


class Transient(Exception):
    """Worth another try: a connection that broke or stalled, a 5xx."""


class NotSpliceable(TransferError):
    """An answer to a ranged request that must not be written into the
    partial file: a 200, another range, another validator."""


class ImageChanged(NotSpliceable):
    """The image behind the URL is no longer the one being downloaded."""


class IntegrityError(TransferError):
    """The bytes received differ from the image's recorded digest."""
