"""``napari-vmunet``: the headless front end.

Each sub-command lives in its own module exposing ``register(subparsers)``
(adds its parser and sets ``func``).  The same core library serves the CLI,
notebooks and the napari docks, so a sub-command only parses arguments,
shows a progress bar and reports.  Errors are printed as one readable line;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .._version import __version__

#: sub-command modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = (
    'predict',
    'measure',
    'train',
    'info',
    'convert',
    'export_bioimageio',
    'demo',
)


class UserError(Exception):
    """An error caused by the input, reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='napari-vmunet',
        description='VM-UNet segmentation: predict, train, inspect and convert '
        'checkpoints, or open the napari demo.',
    )
    parser.add_argument(
        '--version', action='version', version=f'%(prog)s {__version__}'
    )
    parser.add_argument(
        '--debug', action='store_true', help='show full tracebacks on errors'
    )
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in COMMANDS:
        importlib.import_module(f'.{name}', __name__).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print('napari-vmunet: interrupted', file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `napari-vmunet info x | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f'napari-vmunet: error: {_one_line(err)}', file=sys.stderr)
        print('(run with --debug for the full traceback)', file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    """The error as one line, its non-printable characters escaped (messages
    quote names and notes from files)."""
    from ._text import printable

    text = ' '.join(str(err).split()) or type(err).__name__
    if isinstance(err, MemoryError) and not str(err):
        text = (
            'out of memory (MemoryError); use a smaller tile size or batch, or '
            'close other programs'
        )
    elif not isinstance(err, (UserError, ValueError, FileNotFoundError, OSError)):
        text = f'{type(err).__name__}: {text}'
    return printable(text)


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
