import numpy as np
import pytest

from toy_models.corpus import CorpusError, _paragraph_chunks, split_of
from toy_models.data import BlockData, load_blocks, pack, token_array, tokenize_texts


def test_tokenize_appends_eos_between_documents(tokenizer):
    ids = tokenize_texts(["To be, or not to be", "Amen."], tokenizer)
    assert all(doc[-1] == tokenizer.eos_token_id for doc in ids)
    assert tokenizer.decode(ids[0][:-1]) == "To be, or not to be"


def test_pack_cuts_blocks_and_drops_tail():
    blocks = pack(np.arange(10, dtype=np.int32), 4)
    assert blocks.shape == (2, 4) and blocks[1, 0] == 4
    with pytest.raises(CorpusError, match="fewer than one block"):
        pack(np.arange(3, dtype=np.int32), 4)


def test_batches_are_a_pure_function_of_seed_and_step():
    data = BlockData(train=np.arange(40 * 4).reshape(40, 4), validation=np.zeros((3, 4)), seed=3)
    again = BlockData(train=data.train, validation=data.validation, seed=3)
    assert (data.train_batch(7, 8) == again.train_batch(7, 8)).all()
    epoch = np.concatenate([data.train_batch(s, 8)[:, 0].numpy() for s in range(5)])
    assert sorted(epoch // 4) == list(range(40))  # one epoch visits every block once
    assert not (data.train_batch(0, 8) == data.train_batch(5, 8)).all()  # next epoch reshuffles


def test_validation_budget_is_fixed():
    data = BlockData(train=np.zeros((4, 8)), validation=np.arange(10 * 8).reshape(10, 8))
    batches = list(data.validation_batches(batch_size=3, max_tokens=40))
    assert sum(b.shape[0] for b in batches) == 5


def test_bundled_corpus_split_is_document_level_and_cached(tokenizer):
    assert split_of("kjv/Genesis/001") == split_of("kjv/Genesis/001")
    data = load_blocks(tokenizer, seq_len=64)
    assert len(data.train) > 10 * len(data.validation) > 0
    tokens = token_array("bundled", "validation", tokenizer)
    assert np.array_equal(tokens, token_array("bundled", "validation", tokenizer))
    assert (tokens == tokenizer.eos_token_id).sum() > 100  # one EOS per document


def test_paragraph_chunks_reach_min_size():
    text = "\n\n".join(f"paragraph {i} " + "x" * 50 for i in range(40))
    chunks = _paragraph_chunks(text, 500)
    assert all(len(c) >= 500 for c in chunks)
    assert "".join(chunks).count("paragraph") == 40


def test_missing_dataset_path_is_a_clear_error(tokenizer):
    with pytest.raises(CorpusError, match="missing dataset path"):
        token_array("/nonexistent/*.json", "train", tokenizer)
