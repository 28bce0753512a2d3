"""Checking what the user gave an export, before any work: the checkpoint,
the package's name and description, authors, licence, citations, cover.
Each check raises ``ValueError`` saying what bioimage.io accepts."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._package import DOI

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint, Metadata

_NAME_CHARS = re.compile(r'[^A-Za-z0-9_+\- ()]')


def checkpoint_of(model: Any) -> Checkpoint:
    """``model`` loaded (a path or name resolved by the caller), or as given."""
    from ..checkpoint import Checkpoint, load_checkpoint

    if isinstance(model, Checkpoint):
        return model
    return load_checkpoint(model)


def package_name(name: str | None, ckpt) -> str:
    """The package name: the user's, checked, or one made from the file name."""
    if name is None or not name.strip():
        stem = Path(str(ckpt.path)).name.split('.')[0]
        name = _NAME_CHARS.sub('-', f'VM-UNet {stem}')[:64].strip()
        return name if len(name) >= 5 else 'VM-UNet model'
    name = ' '.join(name.split())
    bad = sorted(set(_NAME_CHARS.findall(name)))
    if bad or not 5 <= len(name) <= 128:
        raise ValueError(
            f'model name {name!r} is not accepted by bioimage.io: it must be '
            '5 to 128 characters of letters, digits, spaces and _ + - ( )'
            + (f' (it contains {" ".join(bad)})' if bad else '')
        )
    return name


def package_description(description: str | None, meta: Metadata) -> str:
    """The one-paragraph description: the user's, or one from the classes."""
    if description is None or not description.strip():
        names = meta.classes.names
        description = (
            f'VM-UNet (Vision Mamba U-Net) segmentation of '
            f'{", ".join(names[1:])} (classes: {", ".join(names)}), '
            'exported by napari-vmunet.'
        )
        if meta.provenance.notes:
            description += f' {meta.provenance.notes}'
    description = ' '.join(description.split())
    if len(description) > 1024:
        raise ValueError(
            f'the description has {len(description)} characters; bioimage.io '
            'takes at most 1024 (put the rest in the README)'
        )
    return description


def check_authors(authors: Sequence[str] | str | None) -> list[str]:
    """At least one author; ``"A; B"`` is two."""
    if isinstance(authors, str):
        authors = [authors]
    out = []
    for entry in authors or []:
        out += [a.strip() for a in str(entry).split(';') if a.strip()]
    if not out:
        raise ValueError(
            'a bioimage.io package needs at least one author: give the '
            'names of the people who trained the model (--authors "Jane Doe")'
        )
    for author in out:
        if '/' in author:
            raise ValueError(f'author name {author!r} may not contain "/"')
    return out


def check_license(license_id: str) -> str:
    """An SPDX identifier bioimage.io accepts."""
    from bioimageio.spec.model.v0_5 import LicenseId

    license_id = (license_id or '').strip()
    try:
        LicenseId(license_id)
    except ValueError:
        raise ValueError(
            f'license {license_id!r} is not an SPDX license identifier that '
            'bioimage.io accepts; use e.g. CC-BY-4.0 (the recommended one for '
            'models), MIT, BSD-3-Clause or Apache-2.0'
        ) from None
    return license_id


def check_citation(entry: str | tuple[str, str]) -> tuple[str, str]:
    """``'TEXT|DOI'``, ``'TEXT|URL'`` or a pair -> ``(text, reference)``."""
    if isinstance(entry, str):
        text, sep, ref = entry.rpartition('|')
        if not sep:
            raise ValueError(
                f'citation {entry!r} needs a DOI or a URL: write "TEXT|DOI" '
                '(e.g. "Doe J. et al. 2025|10.1234/abcd") or "TEXT|https://..."'
            )
    else:
        text, ref = entry
    text, ref = ' '.join(str(text).split()), str(ref).strip()
    if not text:
        raise ValueError(f'citation {entry!r} has no text before the "|"')
    if not (DOI.match(ref) or ref.startswith(('https://', 'http://'))):
        raise ValueError(
            f'citation reference {ref!r} is neither a DOI (10.xxxx/...) nor a '
            'URL (https://...)'
        )
    return text, ref


def cover_file(cover: str | os.PathLike | None) -> Path | None:
    """The user's cover image (PNG, JPEG or GIF), or None to make one."""
    if cover is None or str(cover) == '':
        return None
    path = Path(cover).expanduser()
    if not path.is_file():
        raise ValueError(f'{path}: the cover image does not exist')
    if path.suffix.lower() not in ('.png', '.jpg', '.jpeg', '.gif'):
        raise ValueError(
            f'{path}: bioimage.io covers are PNG, JPEG or GIF images, got '
            f'{path.suffix or "no extension"}'
        )
    return path
