"""Which requests are image uploads and downloads: one matcher for every
filter.

A filter may sit anywhere in a deployer's pipeline, also before Glance's
``versionnegotiation`` (which rewrites ``/v2.1/...`` to ``/v2/...``), so
every minor version of the v2 API is matched. ``PATH_INFO`` is matched, so
a ``SCRIPT_NAME`` prefix (Glance served under ``/image``) is no part of it.
"""

import re

_UPLOAD_PATH = re.compile(
    r'/v2(?:\.[0-9]+)?/images/(?P<image_id>[^/]+)/(?P<target>file|stage)/?')


#: A transfer session's own URL: ``session`` under the upload's own URL
#: (its status document, extension and cancellation), and its actions
#: under that.
_SESSION_PATH = re.compile(
    r'/v2(?:\.[0-9]+)?/images/(?P<image_id>[^/]+)/(?P<target>file|stage)'
    r'/session(?:/(?P<action>extend|pause|resume|finalize))?/?')


#: A tus upload's own URL: a random upload id under the image's upload
#: URL (the creation URL of tus, to which ``POST`` and ``OPTIONS`` go).
_TUS_PATH = re.compile(
    r'/v2(?:\.[0-9]+)?/images/(?P<image_id>[^/]+)/(?P<target>file|stage)'
    r'/tus/(?P<upload_id>[^/]+)/?')


def tus_target(environ):
    """``(image_id, target, upload_id)`` for a tus request: ``OPTIONS`` to
    an upload URL, ``POST`` to one with ``Tus-Resumable`` (upload_id
    None), or any method to a tus upload's own URL; else None."""
    path = environ.get('PATH_INFO', '')
    upload = tus_upload(path)
    if upload is not None:
        return upload
    method = environ.get('REQUEST_METHOD')
    if method == 'OPTIONS' or (method == 'POST'
                               and 'HTTP_TUS_RESUMABLE' in environ):
        match = _UPLOAD_PATH.fullmatch(path)
        if match is not None:
            return match.group('image_id'), match.group('target'), None
    return None


def tus_upload(path):
    """``(image_id, target, upload_id)`` of a tus upload's URL path (as in
    ``Upload-Concat``), else None."""
    match = _TUS_PATH.fullmatch(path)
    if match is None:
        return None
    return (match.group('image_id'), match.group('target'),
            match.group('upload_id'))


def session_target(environ):
    """``(image_id, 'file' or 'stage', action or None)`` for a request to a
    transfer session's own URL (any method), else None."""
    match = _SESSION_PATH.fullmatch(environ.get('PATH_INFO', ''))
    if match is None:
        return None
    return (match.group('image_id'), match.group('target'),
            match.group('action'))


def upload_target(environ):
    """``(image_id, 'file' or 'stage')`` for an image data upload, else
    None."""
    if environ.get('REQUEST_METHOD') != 'PUT':
        return None
    match = _UPLOAD_PATH.fullmatch(environ.get('PATH_INFO', ''))
    if match is None:
        return None
    return match.group('image_id'), match.group('target')


#: An image's data: ``GET`` downloads it.
_DOWNLOAD_PATH = re.compile(
    r'/v2(?:\.[0-9]+)?/images/(?P<image_id>[^/]+)/file/?')


def download_target(environ):
    """The image id of an image data download (``GET .../file``), else
    None."""
    if environ.get('REQUEST_METHOD') != 'GET':
        return None
    match = _DOWNLOAD_PATH.fullmatch(environ.get('PATH_INFO', ''))
    if match is None:
        return None
    return match.group('image_id')
