"""Where the datasets live: data-directory resolution, verified downloads, checksums.

Resolution order everywhere: ``--data-dir`` flag > ``EMBEDLAB_DATA_DIR`` > ``./data``. A dataset
missing there is downloaded when the network works and verified; offline, the error names the
expected files and both ways to point at an existing copy.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

from embedlab.errors import InputError, MissingFileError
from embedlab.files import file_hash
from embedlab.logs import progress_bar_class

ENV_VAR = "EMBEDLAB_DATA_DIR"
DEFAULT_DIR = Path("data")

MOVIELENS_DIRNAME = "ml-latest-small"
MOVIELENS_BASE = "https://files.grouplens.org/datasets/movielens"
#: sha256 of the files of the official ml-latest-small release (generated 2018-09-26).
MOVIELENS_SHA256 = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
}
#: The MovieLens releases with the same CSV layout. Each archive's published checksum is the
#: ``<archive>.md5`` file GroupLens serves beside it; ml-latest-small's files are pinned above.
MOVIELENS_DATASETS = ("ml-latest-small", "ml-25m", "ml-32m", "ml-latest")
MOVIELENS_FILES = ("movies.csv", "ratings.csv")


class DataNotFoundError(MissingFileError):
    """A dataset is neither on disk nor downloadable; the message says how to fix it."""


class ChecksumError(InputError):
    """A file on disk differs from the official release."""


Downloader = Callable[[str, Path], None]


#: (users, movies, ratings) of the public releases (GroupLens README files).
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-latest-small": (610, 9_742, 100_836),
    "ml-25m": (162_541, 62_423, 25_000_095),
    "ml-32m": (200_948, 87_585, 32_000_204),
    "ml-latest": (330_975, 86_537, 33_832_162),
}


def shape_of(name: str) -> tuple[int, int, int]:
    """A release name (``ml-32m``) or a multiple of ml-latest-small (``8x``: users and ratings x 8, movies x sqrt(8)).

    Catalogues grow more slowly than audiences: from ml-latest-small to ML-32M users grow x330 but
    movies only x9, about the square root, hence movies x sqrt(N).
    """
    if name in SHAPES:
        return SHAPES[name]
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[x×]\s*", name)
    if not m or float(m.group(1)) <= 0:
        raise InputError(
            f"unknown synthetic size {name!r}; use one of {', '.join(SHAPES)} or a multiple of ml-latest-small such"
            " as 8x"
        )
    f = float(m.group(1))
    u, mv, r = SHAPES["ml-latest-small"]
    return max(2, round(u * f)), max(20, round(mv * f**0.5)), max(40, round(r * f))


def available_memory() -> int:
    """Memory this process may still use (MemAvailable on Linux, else the physical total)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


#: Peak memory of reading a CSV with pandas, per byte of the file (4.1-4.7x measured on MovieLens-shaped files of 2.5
#: and
#: 94 MB, rounded up), plus what the interpreter, torch and the study's fixed arrays take.
CSV_BYTES_PER_BYTE = 5
CSV_FIXED_BYTES = 2 * 1024**3


def check_table_file(path: Path, available: int | None = None) -> None:
    """Refuse, before reading, a data file that is not text (NUL bytes, e.g. a sparse file) or would not fit in
    memory."""
    size = path.stat().st_size
    with open(path, "rb") as f:  # a few samples across the file: a text CSV never holds a NUL byte
        for offset in sorted({0, size // 4, size // 2, 3 * size // 4, max(0, size - 65536)}):
            f.seek(offset)
            if b"\0" in f.read(65536):
                raise InputError(
                    f"{path} holds NUL bytes near byte {offset:,}, so it is not a CSV text file (a damaged or sparse "
                    "copy?); restore the original file"
                )
    need = CSV_FIXED_BYTES + CSV_BYTES_PER_BYTE * size
    have = available_memory() if available is None else available
    if need > have:
        raise InputError(
            f"{path} is {size / 1e9:.1f} GB; reading it needs about {need / 1024**3:.1f} GiB of memory but "
            f"{have / 1024**3:.1f} GiB are available; use a machine with more memory or a smaller release"
        )


def resolve_data_dir(flag: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$EMBEDLAB_DATA_DIR`` if set, else ``./data``."""
    env = os.environ if environ is None else environ
    if flag:
        return Path(flag).expanduser()
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    return DEFAULT_DIR


def download_url(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` with a tqdm progress bar (written to ``dest.part`` first)."""
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (fixed https URL)
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar_class = progress_bar_class()
        with open(part, "wb") as f, bar_class(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
            while block := resp.read(1 << 16):
                f.write(block)
                bar.update(len(block))
    part.replace(dest)


def movielens_digests(folder: Path) -> dict[str, str]:
    """The sha256 of each MovieLens file in ``folder``: what a run records of its data, and what ``--resume``
    compares."""
    return {name: file_hash(Path(folder) / name) for name in MOVIELENS_FILES}


def verify_movielens(
    folder: Path, dataset: str, allow_modified: bool = False, digests: dict[str, str] | None = None
) -> str:
    """Check local files against the official release; returns what was verified (for metrics and the report).

    ml-latest-small's files are pinned by sha256. GroupLens publishes checksums only of the larger
    releases' archives, so their unpacked CSVs can be checked for content only (``load_ratings``).
    """
    if dataset != MOVIELENS_DIRNAME:
        return f"{dataset}: content checked (GroupLens publishes checksums of the archive only, not of its files)"
    digests = digests or movielens_digests(folder)
    changed = [name for name, expected in MOVIELENS_SHA256.items() if digests[name] != expected]
    if not changed:
        return "ml-latest-small: ratings.csv and movies.csv match the official release (sha256)"
    if not allow_modified:
        raise ChecksumError(
            f"{', '.join(str(Path(folder) / n) for n in changed)} differ(s) from the official ml-latest-small release "
            "(sha256); restore the original files, or pass --allow-modified-data to use these on purpose"
        )
    return (
        f"ml-latest-small: MODIFIED ({', '.join(changed)} differ from the official release; used on purpose with"
        " --allow-modified-data)"
    )


def _missing_message(what: str, folder: Path, files: list[str], reason: str) -> str:
    listing = "\n".join(f"  {folder / name}" for name in files)
    return (
        f"{what} not found: expected\n{listing}\n"
        f"and it could not be downloaded ({reason}).\n"
        f"Point embedlab at a folder that holds {folder.name}/ either with --data-dir DIR "
        f"or with the environment variable {ENV_VAR}=DIR."
    )


def check_dataset_name(name: str) -> str:
    """``name`` if it is a MovieLens release embedlab reads, else a ValueError listing them."""
    if name not in MOVIELENS_DATASETS:
        raise InputError(
            f"unknown MovieLens dataset {name!r}; choose from {', '.join(MOVIELENS_DATASETS)} "
            "(or --synthetic NAME for a generated dataset of that shape)"
        )
    return name


def _verify_archive(name: str, archive: Path, data_dir: Path, download: Downloader) -> None:
    """Check a downloaded archive against the md5 that GroupLens publishes beside it."""
    md5_path = Path(data_dir) / f"{name}.zip.md5"
    download(f"{MOVIELENS_BASE}/{name}.zip.md5", md5_path)
    expected = md5_path.read_text().split()[0].strip().lower()
    got = file_hash(archive, "md5")
    md5_path.unlink(missing_ok=True)
    if got != expected:
        bad = archive.with_name(archive.name + ".unverified")
        archive.replace(bad)
        raise ChecksumError(
            f"downloaded {archive.name} has md5 {got}, GroupLens publishes {expected}; the copy was moved to {bad}"
        )


def ensure_movielens(
    data_dir: Path, download: Downloader | None = download_url, dataset: str = MOVIELENS_DIRNAME
) -> Path:
    """Return the folder of MovieLens ``dataset`` under ``data_dir``, downloading it if it is missing.

    ``download=None`` forbids the network (tests, ``--offline``). A downloaded copy is verified
    before it is used: ml-latest-small file by file against pinned sha256s, the larger releases
    against the md5 GroupLens publishes for each archive.
    """
    check_dataset_name(dataset)
    folder = Path(data_dir) / dataset
    needed = list(MOVIELENS_FILES)
    what = f"MovieLens {dataset}"
    if all((folder / name).is_file() for name in needed):
        return folder
    if download is None:
        raise DataNotFoundError(_missing_message(what, folder, needed, "offline mode"))
    archive = Path(data_dir) / f"{dataset}.zip"
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        download(f"{MOVIELENS_BASE}/{dataset}.zip", archive)
        if dataset != MOVIELENS_DIRNAME:
            _verify_archive(dataset, archive, Path(data_dir), download)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(data_dir)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as exc:
        raise DataNotFoundError(_missing_message(what, folder, needed, str(exc))) from exc
    if dataset == MOVIELENS_DIRNAME:
        for name, expected in MOVIELENS_SHA256.items():
            got = file_hash(folder / name)
            if got != expected:
                bad = folder.with_name(folder.name + ".unverified")
                shutil.rmtree(bad, ignore_errors=True)
                folder.rename(bad)
                raise ChecksumError(
                    f"downloaded {name} has sha256 {got}, expected {expected}; the copy was moved to {bad}. "
                    "Download ml-latest-small yourself and pass its parent folder with --data-dir."
                )
    archive.unlink(missing_ok=True)
    return folder
