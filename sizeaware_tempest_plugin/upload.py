"""Image uploads with the headers tempest's own image client cannot send.

Tempest's ``store_image_file`` and ``stage_image_file`` take no headers, so
these go through the same client's ``request``: same endpoint, same token,
same error mapping (400 raises ``BadRequest``, 413 ``OverLimit``).
"""

import functools
import io

CHUNK_SIZE = 64 * 1024


def put_image_data(images_client, image_id, data, target='file',
                   image_size=None, headers=None):
    """PUT ``data`` (bytes) to the image's ``/file`` or ``/stage``, chunked.

    :param image_size: the ``X-OpenStack-Image-Size`` value, sent as given
        (``str()`` of it), or None to send no such header.
    """
    all_headers = {'Content-Type': 'application/octet-stream'}
    if image_size is not None:
        all_headers['X-OpenStack-Image-Size'] = str(image_size)
    all_headers.update(headers or {})
    body = iter(functools.partial(io.BytesIO(data).read, CHUNK_SIZE), b'')
    resp, _ = images_client.request(
        'PUT', 'images/%s/%s' % (image_id, target), headers=all_headers,
        body=body, chunked=True)
    images_client.expected_success(204, resp.status)
    return resp
