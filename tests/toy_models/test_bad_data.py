"""A bad data file or an unreachable hub is one line naming the file or what could not be
fetched, with the fix, raised before any run directory is written."""

import gzip
import json
import socket
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.training.loop import train
from tests.conftest import tiny_config
from toy_models.corpus import CorpusError


def _jsonl(path, n=50):
    path.write_text("".join(json.dumps({"text": f"document {i} " * 30}) + "\n" for i in range(n)))
    return path


def _bad_files(tmp_path):
    good = _jsonl(tmp_path / "good-train.jsonl")
    truncated_json = tmp_path / "trunc-train.jsonl"
    truncated_json.write_text(good.read_text()[:-40])
    table = pa.table({"text": [f"document {i} " * 30 for i in range(50)]})
    pq.write_table(table, tmp_path / "full.parquet")
    truncated_parquet = tmp_path / "trunc-train.parquet"
    truncated_parquet.write_bytes((tmp_path / "full.parquet").read_bytes()[:200])
    empty = tmp_path / "empty-train.jsonl"
    empty.write_text("")
    latin = tmp_path / "latin-train.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n' * 50)
    no_text = tmp_path / "notext-train.jsonl"
    no_text.write_text("".join(json.dumps({"body": "x"}) + "\n" for _ in range(50)))
    shaped = tmp_path / "list-train.jsonl"
    shaped.write_text("[1, 2, 3]\n" * 50)
    torn_gz = tmp_path / "torn-train.json.gz"
    torn_gz.write_bytes(gzip.compress(good.read_bytes())[:100])
    return [truncated_json, truncated_parquet, empty, latin, no_text, shaped, torn_gz]


def test_each_bad_file_is_one_line_naming_it_and_no_run_directory(tmp_path):
    for path in _bad_files(tmp_path):
        out = tmp_path / f"run-{path.stem}"
        with pytest.raises(CorpusError) as caught:
            train(tiny_config(data=str(path), steps=2), out=out, progress=False)
        message = str(caught.value)
        assert path.name in message and "\n" not in message, message
        assert not out.exists(), path


def test_an_unreachable_hub_fails_fast_with_the_offline_alternatives(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    with pytest.raises(CorpusError, match="cannot reach the Hugging Face hub .* --data bundled"):
        train(tiny_config(data="c4", steps=2), out=tmp_path / "run", progress=False)
    assert time.monotonic() - start < 30  # not a half-minute of retries
    assert not (tmp_path / "run").exists()


def test_reading_a_file_the_datasets_cache_has_not_seen_prints_nothing(tmp_path, capsys):
    """The first read of a file makes datasets build its cache and draw a progress bar per
    split on stderr; off a terminal (a log, a test capturing a one-line error) that is noise
    in front of the one line. A fresh file is one the cache has not seen."""
    from toy_models.data import load_documents

    train = _jsonl(tmp_path / "fresh-train.jsonl")
    _jsonl(tmp_path / "fresh-validation.jsonl", n=7)
    for split, n in (("train", 50), ("validation", 7)):
        assert len(load_documents(str(train), split)) == n
    assert capsys.readouterr().err == ""
