"""Every file embedlab writes goes through :func:`write_atomic`: a temporary name in the same folder, then a rename.

An interrupt, a crash or a full disk therefore leaves the old file or the new one, never half of one, and
a full disk is reported once, naming the folder and the space the file needed. Library writers (numpy,
torch, matplotlib) serialise into memory first (``npz_bytes``, ``torch_bytes``), so the size is known.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from embedlab.errors import DiskFullError, InputError

#: errno values that mean "this file system has no room": no space, or the user's quota is used up.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal units, like df -H)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_bytes(folder: Path) -> int | None:
    """Bytes free for an unprivileged writer under ``folder`` (None when the file system cannot say)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: Path, needed: int | None) -> DiskFullError:
    """The one message for a full file system: which folder, how much the file needed, how much is free."""
    folder = Path(path).parent
    free = free_bytes(folder)
    need = f"{human_bytes(needed)} needed" if needed is not None else "more space needed"
    have = f", {human_bytes(free)} free" if free is not None else ""
    exc = DiskFullError(
        f"no space left in {folder} to write {Path(path).name} ({need}{have}); free some space there or point "
        "embedlab at another folder, then run the command again (finished steps are kept)"
    )
    exc.errno = errno.ENOSPC
    return exc


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` under a temporary name, then rename it into place."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # it may never have been made (a file where a folder should be)
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise disk_full(path, len(payload)) from None
        if isinstance(exc, (NotADirectoryError, IsADirectoryError)):
            raise InputError(
                f"cannot write {path}: {exc.strerror.lower() if exc.strerror else exc} (a file stands where a folder"
                " should be, or a folder where the file should be); it was replaced since embedlab made it. Restore"
                " it, or use another folder"
            ) from None
        raise
    return path


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks by ``hashlib.file_digest`` (md5 for GroupLens' published archive sums)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=algorithm != "md5")).hexdigest()


def npz_bytes(**arrays: Any) -> bytes:
    """``np.savez_compressed`` into memory."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def torch_bytes(obj: Any) -> bytes:
    """``torch.save`` into memory."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def figure_bytes(fig: Any, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class UnreadableFile(Exception):
    """A file that ``read_torch`` could not parse; the message says how torch failed."""


def read_torch(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a file torch cannot parse raises UnreadableFile.

    torch's parser raises a different exception for each way a file can be cut or replaced (measured: RuntimeError,
    OSError, EOFError, KeyError, IndexError, struct.error, UnpicklingError for a cut zip, a zip header alone, an empty
    file, text, junk and pickles of disallowed objects). The try block holds torch's parser alone, so no embedlab bug
    can hide behind the broad catch; callers decide what a damaged file means (a cache miss, or a one-line error).
    """
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # its notes on old pickle formats would come before the one error line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - see the docstring: only torch's parsing of the file is inside
        text = str(exc).strip()
        raise UnreadableFile(f"{type(exc).__name__}: {text.splitlines()[0][:100] if text else 'unreadable'}") from exc


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice: which value was meant cannot be told."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_json(text: str) -> Any:
    """JSON as embedlab reads its config and ledger files: a key given twice in one object is an error (``json`` keeps
    the
    last one silently), and so is nesting deeper than the parser's recursion limit. Both raise ``ValueError``, as
    ``json.JSONDecodeError`` (a ``ValueError``) does for text that is not JSON."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply (objects or lists inside each other hundreds of levels deep)") from None
