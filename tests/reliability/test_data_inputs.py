"""Logs that are not plain UTF-8 text files: read them (BOM, gzip) or exit 2 naming the file."""

import gzip
import time

import pytest

from tests.reliability.conftest import HEADER, ROWS, prepare, report_of, write_yaml

TEXT = "\n".join([HEADER, *ROWS]) + "\n"


def test_utf8_bom_is_read(tmp_path, capsys):
    log = tmp_path / "log.tsv"
    log.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    code, out, err = prepare(capsys, write_yaml(tmp_path, log, split={"valid_per_user": 1, "test_per_user": 1}))
    assert code == 0, err
    assert report_of(out)["rows_kept"] == 8


def test_gzip_log_is_read_by_its_magic_bytes(tmp_path, capsys):
    for name in ("log.tsv.gz", "log_gz_without_extension.tsv"):
        log = tmp_path / name
        log.write_bytes(gzip.compress(TEXT.encode()))
        code, out, err = prepare(capsys, write_yaml(tmp_path, log))
        assert code == 0, err
        assert report_of(out)["rows_kept"] == 8


def test_damaged_gzip_names_the_file(tmp_path, capsys):
    log = tmp_path / "log.tsv.gz"
    log.write_bytes(gzip.compress(TEXT.encode())[:30])
    code, _, err = prepare(capsys, write_yaml(tmp_path, log))
    assert code == 2 and "log.tsv.gz: damaged compressed file" in err


def test_latin1_byte_names_file_line_and_column(tmp_path, capsys):
    log = tmp_path / "log.tsv"
    log.write_bytes(TEXT.replace("a\tz\t3", "a\tcaf\xe9\t3").encode("latin-1"))
    code, _, err = prepare(capsys, write_yaml(tmp_path, log))
    assert code == 2
    assert "log.tsv:4:6: byte 0xe9 is not valid UTF-8" in err


def test_zstd_without_zstandard_or_read(tmp_path, capsys):
    try:
        import zstandard
    except ImportError:
        log = tmp_path / "log.tsv.zst"
        log.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 16)
        code, _, err = prepare(capsys, write_yaml(tmp_path, log))
        assert code == 2 and "log.tsv.zst: zstd-compressed, and the zstandard module is not installed" in err
        return
    log = tmp_path / "log.tsv.zst"
    log.write_bytes(zstandard.ZstdCompressor().compress(TEXT.encode()))
    code, out, err = prepare(capsys, write_yaml(tmp_path, log))
    assert code == 0, err


def test_directory_as_source_path(tmp_path, capsys):
    folder = tmp_path / "logs"
    folder.mkdir()
    code, _, err = prepare(capsys, write_yaml(tmp_path, folder))
    assert code == 2
    assert "logs: a folder with no log files in it (source.path)" in err  # a folder of shards is a log


def test_command_line_exit_2_and_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / "logs"
    folder.mkdir()
    config = write_yaml(tmp_path, folder, actions={"click": "click"}, name="bad.yaml")
    dir_config = write_yaml(tmp_path, folder, name="dir.yaml")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for path, message in (
        (config, "bad.yaml: actions.click: expected a mapping"),
        (dir_config, "logs: a folder with no log files in it"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "dfgr_torchrec.cli", "data", "prepare", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("engine", ["duckdb", "python"])
@pytest.mark.parametrize(
    "size, message",
    [
        (20 << 20, "log.tsv:1: NUL bytes and no line break in 16,777,216 characters: not a delimited text log"),
        (1 << 20, "field larger than field limit (131072); not a delimited text log"),
    ],
)
def test_a_file_of_nul_bytes_is_refused_at_once(tmp_path, capsys, engine, size, message):
    log = tmp_path / "log.tsv"
    log.write_bytes(b"\0" * size)  # the 2 GB case read the whole "line" (50 s, 4.3 GB) before failing
    start = time.perf_counter()
    code, _, err = prepare(capsys, write_yaml(tmp_path, log, source={"engine": engine}))
    assert code == 2 and message in err, err
    assert time.perf_counter() - start < 10
