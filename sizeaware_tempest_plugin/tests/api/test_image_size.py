"""The size filter through tempest's image client, as a cloud user sees it."""

import os

from tempest import config
from tempest.api.image import base
from tempest.common import waiters
from tempest.lib import decorators
from tempest.lib import exceptions as lib_exc

from sizeaware_tempest_plugin import upload

CONF = config.CONF


class ImageSizeTest(base.BaseV2ImageTest):
    """Uploads carrying X-OpenStack-Image-Size."""

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.sizeaware.enabled:
            raise cls.skipException('the sizeaware filter is not deployed')

    def setUp(self):
        super().setUp()
        # More than one upload chunk, and not a multiple of it.
        self.data = os.urandom(upload.CHUNK_SIZE * 16 + 3)

    def _new_image(self):
        image = self.create_image(container_format='bare', disk_format='raw',
                                  visibility='private')
        self.assertEqual('queued', image['status'])
        return image['id']

    def _put(self, image_id, size, target='file', **kwargs):
        return upload.put_image_data(self.client, image_id, self.data,
                                     target=target, image_size=size, **kwargs)

    def _assert_queued_without_data(self, image_id):
        image = self.client.show_image(image_id)
        self.assertEqual('queued', image['status'])
        self.assertIsNone(image['size'])

    @decorators.idempotent_id('a3f1c6a2-6c1e-4d53-9d4e-1f0d6a1d9c01')
    def test_upload_with_correct_size(self):
        image_id = self._new_image()
        self._put(image_id, len(self.data))
        image = self.client.show_image(image_id)
        self.assertEqual('active', image['status'])
        self.assertEqual(len(self.data), image['size'])
        body = self.client.show_image_file(image_id)
        self.assertEqual(self.data, body.data)

    @decorators.idempotent_id('1d8b7a55-0a4f-4c57-8d51-0f1b2d0e9c02')
    def test_stage_with_correct_size_then_import(self):
        if not CONF.image_feature_enabled.import_image:
            raise self.skipException('image import is not enabled')
        image_id = self._new_image()
        self._put(image_id, len(self.data), target='stage')
        self.assertEqual('uploading',
                         self.client.show_image(image_id)['status'])
        self.client.image_import(image_id, method='glance-direct')
        waiters.wait_for_image_status(self.client, image_id, 'active')
        image = self.client.show_image(image_id)
        self.assertEqual(len(self.data), image['size'])

    @decorators.idempotent_id('5c0e9d1b-7f2a-4b8e-9a63-2e4f1c7d9c03')
    def test_one_byte_over_is_refused_and_retry_succeeds(self):
        for target in ('file', 'stage'):
            image_id = self._new_image()
            self.assertRaises(lib_exc.BadRequest, self._put, image_id,
                              len(self.data) + 1, target=target)
            self._assert_queued_without_data(image_id)
            self._put(image_id, len(self.data), target=target)

    @decorators.idempotent_id('8e2d4f6a-1b3c-4d5e-8f70-3a5b7c9d9c04')
    def test_one_byte_under_is_refused_and_retry_succeeds(self):
        for target in ('file', 'stage'):
            image_id = self._new_image()
            self.assertRaises(lib_exc.BadRequest, self._put, image_id,
                              len(self.data) - 1, target=target)
            self._assert_queued_without_data(image_id)
            self._put(image_id, len(self.data), target=target)

    @decorators.idempotent_id('b7c9e1f3-5a2d-4e6f-9b81-4c6d8e0f9c05')
    def test_malformed_sizes_are_refused(self):
        image_id = self._new_image()
        n = len(self.data)
        for value in ('+%d' % n, '%d_%d' % divmod(n, 1000), '-1', '0x10',
                      '9' * 26, '%d,%d' % (n, n)):
            self.assertRaises(lib_exc.BadRequest, self._put, image_id, value)
        self._assert_queued_without_data(image_id)

    @decorators.idempotent_id('c1d3e5f7-9b2a-4c6e-8d93-5e7f9a1b9c06')
    def test_size_above_the_cap_is_refused(self):
        image_id = self._new_image()
        self.assertRaises(lib_exc.OverLimit, self._put, image_id,
                          CONF.sizeaware.max_image_size + 1)
        self._assert_queued_without_data(image_id)

    @decorators.idempotent_id('d4e6f8a0-2c3b-4d5f-9ea4-6f8a0b2c9c07')
    def test_content_range_on_plain_put_is_refused(self):
        if CONF.sizeaware.resumable:
            raise self.skipException('with the resumable filter a PUT with '
                                     'Content-Range is a ranged upload')
        image_id = self._new_image()
        n = len(self.data)
        self.assertRaises(lib_exc.BadRequest, self._put, image_id, n,
                          headers={'Content-Range': 'bytes 0-%d/%d' % (
                              n - 1, n)})
        self._assert_queued_without_data(image_id)

    @decorators.idempotent_id('6b0e2f4c-8a1d-4e3b-9c5f-2d7a1e0b9c08')
    def test_whole_image_in_one_range_becomes_the_image(self):
        if not CONF.sizeaware.resumable:
            raise self.skipException('the resumable filter is not deployed')
        image_id = self._new_image()
        n = len(self.data)
        self._put(image_id, n, headers={
            'Content-Range': 'bytes 0-%d/%d' % (n - 1, n)})
        image = self.client.show_image(image_id)
        self.assertEqual('active', image['status'])
        self.assertEqual(n, image['size'])
        self.assertEqual(self.data, self.client.show_image_file(image_id).data)
