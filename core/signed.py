"""Signed files: ``torch.save`` payloads with a SHA-256 trailer, written atomically and read without running code.

Posteriors, checkpoints (``inference.persist``) and backbones (``zoo.models.backbone``) are all such files: a
file with a flipped, lost or added byte, pickled code, another format or another major version is refused with
one line naming the file.
"""
import hashlib
import io
import os
from pathlib import Path

import torch

from . import __version__

FORMAT = "bayesformer-zoo"
FORMAT_VERSION = 2  # bump when the layout below changes; files of another version are refused (2: checksum trailer)


class PosteriorFileError(ValueError):
    """A posterior or checkpoint file cannot be written or read; the message names the file and why."""


def _major(version):
    return str(version).split(".")[0]


TRAILER = b"\nbayesformer-zoo sha256 "  # then 64 hex digits and a newline: the last bytes of every file


def write(obj, path):
    """torch.save ``obj`` to ``path`` with a SHA-256 of the bytes appended, via a temporary file and a rename:
    a crash never leaves a truncated file, and any changed byte is found on load (``read_bytes``)."""
    path = Path(path)
    if path.is_dir():
        raise PosteriorFileError(f"cannot write '{path}': it is a folder; give a file name such as {path / 'posterior.pt'}")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data + TRAILER + hashlib.sha256(data).hexdigest().encode() + b"\n")
        os.replace(tmp, path)
    except OSError as e:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise PosteriorFileError(f"cannot write '{path}': {e.strerror or e}") from None


def read_bytes(path, kind):
    """The torch payload of a file ``write`` wrote, after checking its SHA-256; one line naming the file if not."""
    data = Path(path).read_bytes()
    size = len(TRAILER) + 64 + 1
    payload, trailer = data[:-size], data[-size:]
    if len(data) < size or not trailer.startswith(TRAILER):
        raise PosteriorFileError(f"{kind} file '{path}' has no checksum: it is damaged at its end, or not written "
                                 f"by this version of the zoo (refit, or save it again with Posterior.save)")
    if trailer != TRAILER + hashlib.sha256(payload).hexdigest().encode() + b"\n":
        raise PosteriorFileError(f"{kind} file '{path}' is damaged: its bytes do not match the checksum written "
                                 f"with it; restore it from a copy or refit")
    return payload


def read(path, kind, map_location=None):
    """torch.load(weights_only=True) with one-line errors, then the format and version checks."""
    path = Path(path)
    if not path.is_file():
        raise PosteriorFileError(f"{kind} file '{path}' does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    payload = read_bytes(path, kind)
    try:
        obj = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickled code, truncation, not a torch file: all refused
        unsafe, reason = _load_failure(e)
        if unsafe:
            raise PosteriorFileError(f"{kind} file '{path}' cannot be read safely (only tensors and plain "
                                     f"types are loaded, never code): {reason}") from None
        raise PosteriorFileError(f"{kind} file '{path}' is damaged or not a {FORMAT} file: {reason}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("kind") != kind:
        raise PosteriorFileError(f"'{path}' is not a {FORMAT} {kind} file")
    if obj.get("format_version") != FORMAT_VERSION or _major(obj.get("zoo_version")) != _major(__version__):
        raise PosteriorFileError(
            f"{kind} file '{path}' has format {obj.get('format_version')} from zoo {obj.get('zoo_version')}; "
            f"this is zoo {__version__} reading format {FORMAT_VERSION} (refit, or load it with that version)")
    return obj


def _load_failure(error):
    """(unsafe, one line) from torch.load's long message: the forbidden object if there was one."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()] or [type(error).__name__]
    forbidden = [ln for ln in lines if "global" in ln.lower()]
    if forbidden:
        return True, forbidden[0]
    if lines[0].startswith("Weights only load failed"):
        return True, "it is not a file of tensors and plain types"
    return False, lines[0].split(". ")[0]
