"""The transfer client as an openstackclient plugin: ``openstack sizeaware
upload`` and ``openstack sizeaware download``.

``plugin`` is the module of the ``openstack.cli.extension`` entry point
(the API name ``sizeaware`` and ``make_client``); ``transfer`` holds the
commands of ``openstack.sizeaware.v1``. Both need python-openstackclient
(the ``osc`` extra); nothing else in sizeaware imports them.
"""
