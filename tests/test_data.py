import io
import urllib.error
import zipfile

import pytest

from embedlab.data import ENV_VAR, ChecksumError, DataNotFoundError, ensure_movielens, resolve_data_dir
from embedlab.files import file_hash


def test_resolution_order(tmp_path):
    assert resolve_data_dir("flag", {ENV_VAR: "env"}).as_posix() == "flag"
    assert resolve_data_dir(None, {ENV_VAR: "env"}).as_posix() == "env"
    assert resolve_data_dir(None, {}).as_posix() == "data"


def test_existing_copy_is_used_without_network(movielens_root):
    def no_network(url, dest):
        raise AssertionError("must not download")

    assert ensure_movielens(movielens_root, download=no_network) == movielens_root / "ml-latest-small"


def test_offline_message_names_files_and_both_fixes(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        ensure_movielens(tmp_path, download=None)
    msg = str(err.value)
    assert "ratings.csv" in msg and "movies.csv" in msg and "--data-dir" in msg and ENV_VAR in msg


def test_network_failure_is_the_same_clear_error(tmp_path):
    def unreachable(url, dest):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(DataNotFoundError, match="no route to host"):
        ensure_movielens(tmp_path, download=unreachable)


def test_tampered_download_is_rejected_and_set_aside(tmp_path):
    def fake(url, dest):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("ml-latest-small/ratings.csv", "userId,movieId,rating\n1,1,5.0\n")
            zf.writestr("ml-latest-small/movies.csv", "movieId,title,genres\n1,X (2000),Drama\n")
        dest.write_bytes(buf.getvalue())

    with pytest.raises(ChecksumError, match="expected"):
        ensure_movielens(tmp_path, download=fake)
    assert not (tmp_path / "ml-latest-small").exists()
    assert (tmp_path / "ml-latest-small.unverified" / "ratings.csv").exists()


def test_verified_download_of_the_real_files(tmp_path, real_data):
    src = real_data / "ml-latest-small"

    def fake(url, dest):
        with zipfile.ZipFile(dest, "w") as zf:
            for name in ("ratings.csv", "movies.csv"):
                zf.write(src / name, f"ml-latest-small/{name}")

    folder = ensure_movielens(tmp_path, download=fake)
    assert file_hash(folder / "ratings.csv") == file_hash(src / "ratings.csv")
    assert not (tmp_path / "ml-latest-small.zip").exists()
