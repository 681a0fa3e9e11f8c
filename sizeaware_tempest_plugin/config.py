"""The plugin's own tempest.conf group, ``[sizeaware]``.

The tests run only where ``[sizeaware] enabled = true``, so a cloud without
the filter skips them instead of failing them.
"""

from oslo_config import cfg

group = cfg.OptGroup(name='sizeaware',
                     title='The sizeaware filter in the image API')

opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Whether the image API runs the sizeaware filter.'),
    cfg.BoolOpt('resumable', default=False,
                help='Whether the image API also runs the resumable filter '
                     '(a PUT with Content-Range is then a ranged upload).'),
    cfg.IntOpt('max_image_size', default=2 ** 40, min=0,
               help='The filter\'s max_image_size: declared sizes above it '
                    'are refused with 413.'),
]
