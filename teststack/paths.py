"""Where the test stack keeps virtualenvs, configuration and data."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def state_dir() -> pathlib.Path:
    """The root for everything the stack creates; made on first use."""
    root = pathlib.Path(os.environ.get('SIZEAWARE_STACK_DIR',
                                       REPO / '.stack'))
    root.mkdir(parents=True, exist_ok=True)
    return root


def venvs_dir() -> pathlib.Path:
    """Virtualenvs are kept between runs: building them is the slow part."""
    path = state_dir() / 'venvs'
    path.mkdir(parents=True, exist_ok=True)
    return path
