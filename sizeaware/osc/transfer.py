"""``openstack sizeaware upload`` and ``openstack sizeaware download``:
the arguments and checks of the ``sizeaware`` console script
(:mod:`sizeaware.cmd.transfer`), with openstackclient's authentication
instead of --os-cloud and --os-image-url; the commands run in
:func:`sizeaware.client.cli.run`."""

from osc_lib.command import command

from sizeaware.client import cli
from sizeaware.cmd import transfer


class _Transfer(command.Command):
    #: ``'upload'`` or ``'download'``: :func:`cli.run`'s command.
    transfer_command = None
    #: The console script's function that adds the command's arguments.
    add_arguments = None

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        self.add_arguments(parser)
        transfer.add_connection_arguments(
            parser.add_argument_group('connection'))
        # Bad usage is reported through it, as the console script does.
        self._parser = parser
        return parser

    def connect(self, parsed_args):
        """The connection, through openstackclient's session."""
        return self.app.client_manager.sizeaware.connect(
            **transfer.connection_options(parsed_args))

    def take_action(self, parsed_args):
        transfer.check_arguments(parsed_args, self._parser.error)
        return cli.run(self.transfer_command, parsed_args,
                       lambda: self.connect(parsed_args))


class Upload(_Transfer):
    _description = transfer.UPLOAD_DESCRIPTION
    transfer_command = 'upload'
    add_arguments = staticmethod(transfer.add_upload_arguments)


class Download(_Transfer):
    _description = transfer.DOWNLOAD_DESCRIPTION
    transfer_command = 'download'
    add_arguments = staticmethod(transfer.add_download_arguments)
