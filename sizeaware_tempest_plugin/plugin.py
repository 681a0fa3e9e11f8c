"""Registration of the plugin with tempest (``tempest.test_plugins``)."""

import os

from tempest.test_discover import plugins

from sizeaware_tempest_plugin import config


class SizeawareTempestPlugin(plugins.TempestPlugin):

    def load_tests(self):
        base_path = os.path.split(os.path.dirname(
            os.path.abspath(__file__)))[0]
        test_dir = 'sizeaware_tempest_plugin/tests'
        return os.path.join(base_path, test_dir), base_path

    def register_opts(self, conf):
        conf.register_group(config.group)
        conf.register_opts(config.opts, group=config.group.name)

    def get_opt_lists(self):
        return [(config.group.name, config.opts)]
