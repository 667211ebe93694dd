"""Streamed training data: C4 from the hub as the paper trains, or local shards read as a stream.

Each rank reads only its own share: ``datasets.distributed.split_dataset_by_node`` gives a rank
whole shards when their number divides by the world size (C4 ``en`` has 1024) and every
``world``-th document otherwise, so no document is read by two ranks and none is skipped.

Order: documents pass through a shuffle buffer of ``shuffle_buffer`` documents drawn with a
numpy generator seeded by ``(seed, rank)``; they are tokenized, followed by EOS, concatenated
and cut into ``seq_len`` blocks. When the share is exhausted the stream restarts (next epoch).

Position: ``state_dict()`` holds the stream position (``IterableDataset.state_dict``: the
shard and the document within it), the buffered documents, the tokens not yet in a block,
the generator state and the next step. Loading it seeks to that position without re-reading
anything, and the next batch is the one an uninterrupted run would have read. (``datasets``'
own ``shuffle`` would drop its buffer on resume, which is why the buffer lives here.)

Validation: the first ``max_tokens`` of the unshuffled validation split, packed the same way,
read once and kept in memory; every rank holds the same blocks (``analysis.training.evaluation.evaluate`` deals them).
"""

from __future__ import annotations

import copy

import numpy as np

from toy_models.corpus import CorpusError
from toy_models.data import HUB_DATASETS, batches_of, data_files, load_documents, pack, tokenize_texts

TOKENIZE_DOCUMENTS = 64  # validation documents tokenized per call


class StreamData:
    """This rank's stream of training blocks and the fixed validation blocks of a source."""

    def __init__(
        self,
        source: str,
        tokenizer,
        seq_len: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 10_000,
    ):
        self.source, self.tokenizer, self.seq_len = source, tokenizer, seq_len
        self.rank, self.world_size, self.shuffle_buffer = rank, world_size, shuffle_buffer
        self.rng = np.random.default_rng([seed, rank])
        self.pool: list[str] = []  # the shuffle buffer
        self.tokens = np.zeros(0, dtype=np.int32)  # read but not yet in a block
        self.epoch, self.next_step = 0, 0
        self._dataset = self._iterator = None
        self._position = None  # a loaded stream position, applied on open
        self._validation = np.zeros((0, seq_len), dtype=np.int32)
        self._validation_read = 0  # blocks asked of the split so far
        if source not in HUB_DATASETS:  # a missing or ambiguous path fails now, not mid-run
            data_files(source, "train"), data_files(source, "validation")

    # -------------------------------------------------------------------- reading

    def _open(self) -> None:
        from datasets.distributed import split_dataset_by_node

        dataset = load_documents(self.source, "train", streaming=True)
        dataset = split_dataset_by_node(dataset, rank=self.rank, world_size=self.world_size)
        if self._position is not None:
            dataset.load_state_dict(self._position)
            self._position = None
        self._dataset, self._iterator = dataset, iter(dataset)

    def _read(self) -> str:
        if self._iterator is None:
            self._open()
        try:
            return next(self._iterator)["text"]
        except StopIteration:
            self.epoch += 1
            self._open()
            for document in self._iterator:
                return document["text"]
        raise CorpusError(
            f"rank {self.rank} of {self.world_size} has no documents in "
            f"{self.source!r}; give a source with at least one document per rank"
        )

    def _next_document(self) -> str:
        while len(self.pool) <= self.shuffle_buffer:
            self.pool.append(self._read())
        i = int(self.rng.integers(len(self.pool)))
        self.pool[i], self.pool[-1] = self.pool[-1], self.pool[i]
        return self.pool.pop()

    def _next_block(self) -> np.ndarray:
        while len(self.tokens) < self.seq_len:  # one document at a time: nothing read ahead
            document = tokenize_texts([self._next_document()], self.tokenizer)[0]
            self.tokens = np.concatenate([self.tokens, document])
        block, self.tokens = self.tokens[: self.seq_len], self.tokens[self.seq_len :]
        return block

    def local_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """This rank's ``batch_size / world_size`` blocks of global batch ``step`` (read in order)."""
        import torch

        if (rank, world_size) != (self.rank, self.world_size):
            raise ValueError(
                f"this stream is rank {self.rank} of {self.world_size}, asked for rank {rank} of {world_size}"
            )
        if step != self.next_step:
            raise ValueError(
                f"a stream is read in order: the next batch is step {self.next_step}, asked for step {step}"
            )
        blocks = [self._next_block() for _ in range(batch_size // world_size)]
        self.next_step += 1
        return torch.from_numpy(np.stack(blocks).astype(np.int64))

    def validation_batches(self, batch_size: int, max_tokens: int):
        """The first ``max_tokens`` of the validation split in blocks, in order."""
        n = max(1, max_tokens // self.seq_len)
        if n > self._validation_read:  # read once per budget, even when the split is shorter
            self._validation, self._validation_read = self._read_validation(n), n
        return batches_of(self._validation, batch_size, min(n, len(self._validation)))

    def _read_validation(self, n_blocks: int) -> np.ndarray:
        pieces, texts, count = [], [], 0
        for document in load_documents(self.source, "validation", streaming=True):
            texts.append(document["text"])
            if len(texts) == TOKENIZE_DOCUMENTS:
                new, texts = tokenize_texts(texts, self.tokenizer), []
                pieces += new
                count += sum(len(p) for p in new)
                if count >= n_blocks * self.seq_len:
                    break
        pieces += tokenize_texts(texts, self.tokenizer) if texts else []
        if not pieces:
            raise CorpusError(f"{self.source!r} has no validation documents")
        return pack(np.concatenate(pieces), self.seq_len)[:n_blocks]

    # -------------------------------------------------------------------- position

    def state_dict(self) -> dict:
        position = self._dataset.state_dict() if self._dataset is not None else self._position
        return {
            "position": copy.deepcopy(position),
            "pool": list(self.pool),
            "tokens": self.tokens.copy(),
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "next_step": self.next_step,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("world_size") != self.world_size:
            raise CorpusError(
                f"the stream position was saved by {state.get('world_size')} processes "
                f"and this run has {self.world_size}; a streamed run resumes with the "
                "same number of processes"
            )
        self.pool, self.tokens = list(state["pool"]), np.asarray(state["tokens"], dtype=np.int32)
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.next_step = state["epoch"], state["next_step"]
        self._position, self._dataset, self._iterator = state["position"], None, None
