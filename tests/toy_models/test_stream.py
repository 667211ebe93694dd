import gzip
import hashlib
import json
import re

import numpy as np
import pytest

from toy_models.corpus import CorpusError
from toy_models.stream import StreamData


def _c4_shards(folder, n_shards, per_shard, split="train", validation=True):
    """Local files in C4's format: gzipped JSON lines with text/timestamp/url (for the train
    split also one validation shard, unless ``validation=False``)."""
    if split == "train" and validation:
        _c4_shards(folder, 1, 10, split="validation")
    for s in range(n_shards):
        with gzip.open(folder / f"c4-{split}.{s:05d}-of-01024.json.gz", "wt") as handle:
            for i in range(per_shard):
                k = s * per_shard + i
                words = " ".join(f"w{k}x{j}" for j in range(k % 7 + 3))  # no two blocks alike
                handle.write(
                    json.dumps({"text": f"document {k} {words}", "timestamp": "2019", "url": f"u{k}"}) + "\n"
                )
    return str(folder / f"c4-{split}.*.json.gz")


def _read(data, steps, per_rank_batch, start=0):
    return [
        data.local_batch(step, per_rank_batch * data.world_size, data.rank, data.world_size)
        for step in range(start, start + steps)
    ]


@pytest.mark.parametrize("n_shards", [2, 3])  # whole shards per rank / every other document
def test_two_ranks_read_disjoint_shares_without_gaps(tmp_path, tokenizer, n_shards):
    """Each rank reads its share for one epoch: hashes of the batches never repeat across or
    within ranks, no document reaches both, and together they miss only what the shuffle
    buffers and the partial blocks still hold when the epoch ends."""
    pattern = _c4_shards(tmp_path, n_shards, 60 // n_shards)
    hashes, docs = [], []
    for rank in range(2):
        data = StreamData(pattern, tokenizer, seq_len=8, seed=0, rank=rank, world_size=2, shuffle_buffer=5)
        batches = []
        while data.epoch == 0 and len(batches) < 1000:
            batches.append(data.local_batch(len(batches), 4, rank, 2))
        hashes.append([hashlib.sha256(b.numpy().tobytes()).hexdigest() for b in batches])
        text = tokenizer.decode(np.concatenate([b.numpy().ravel() for b in batches]))
        docs.append(set(re.findall(r"document (\d+) ", text)))
    assert len(set(hashes[0])) == len(hashes[0]) and len(set(hashes[1])) == len(hashes[1])
    assert not set(hashes[0]) & set(hashes[1])
    assert not docs[0] & docs[1]  # no document on both ranks
    # when a rank's epoch ends, its 5 buffered documents and the one being cut are in flight
    assert len(docs[0] | docs[1]) >= 60 - 2 * (5 + 1)


def test_resume_continues_exactly_without_rereading(tmp_path, tokenizer, monkeypatch):
    pattern = _c4_shards(tmp_path, 2, 40)
    reads = []
    original = StreamData._read
    monkeypatch.setattr(StreamData, "_read", lambda self: reads.append(1) or original(self))

    def fresh():
        return StreamData(pattern, tokenizer, seq_len=8, seed=3, rank=1, world_size=2, shuffle_buffer=6)

    first = fresh()
    _read(first, 4, 3)
    state = first.state_dict()
    reads.clear()
    uninterrupted = _read(first, 4, 3, start=4)
    needed = len(reads)
    resumed = fresh()
    resumed.load_state_dict(state)
    reads.clear()
    again = _read(resumed, 4, 3, start=4)
    assert all((a == b).all() for a, b in zip(uninterrupted, again))
    assert len(reads) == needed  # nothing re-read to skip ahead


def test_stream_position_errors_are_clear(tmp_path, tokenizer):
    data = StreamData(_c4_shards(tmp_path, 1, 20), tokenizer, seq_len=8, shuffle_buffer=2)
    with pytest.raises(ValueError, match="read in order: the next batch is step 0, asked for step 3"):
        data.local_batch(3, 2)
    data.local_batch(0, 2)
    other = StreamData(data.source, tokenizer, seq_len=8, rank=0, world_size=2)
    with pytest.raises(CorpusError, match="saved by 1 processes and this run has 2"):
        other.load_state_dict(data.state_dict())


def test_validation_is_a_fixed_prefix_of_the_validation_split(tmp_path, tokenizer):
    pattern = _c4_shards(tmp_path, 1, 30)
    _c4_shards(tmp_path, 1, 30, split="validation")
    data = StreamData(pattern, tokenizer, seq_len=8)
    first = [b.clone() for b in data.validation_batches(batch_size=3, max_tokens=80)]
    assert sum(len(b) for b in first) == 10 and all(b.shape[1] == 8 for b in first)
    again = list(data.validation_batches(batch_size=3, max_tokens=80))
    assert all((a == b).all() for a, b in zip(first, again))
    assert tokenizer.decode(first[0][0]).startswith("document 0 ")


def test_a_validation_split_shorter_than_the_budget_is_read_once(tmp_path, tokenizer, monkeypatch):
    import toy_models.stream as stream

    data = StreamData(_c4_shards(tmp_path, 1, 20), tokenizer, seq_len=8)  # 10 validation docs
    opened = []
    original = stream.load_documents
    monkeypatch.setattr(stream, "load_documents", lambda *a, **k: opened.append(a[1]) or original(*a, **k))
    for _ in range(2):
        batches = list(data.validation_batches(batch_size=4, max_tokens=100_000))
        assert batches and all(len(b) > 0 for b in batches)
        assert sum(len(b) for b in batches) < 100_000 // 8
    assert opened == ["validation"]
