"""Token data for training: tokenize once, cache, pack into blocks, serve seeded batches.

Packing (the default): documents are tokenized, each followed by EOS, concatenated, and
cut into blocks of ``seq_len`` tokens; a block is one training sequence (HF shifts labels
inside the model, so a block gives ``seq_len - 1`` predictions).

Order: the training blocks of epoch ``e`` are visited in ``permutation(seed + e)``; global
batch ``s`` is the ``s``-th run of ``batch_size`` blocks in that order. The position of any
step is therefore a pure function of ``(seed, step)``: resuming never re-reads data.

Sources (all with the C4 schema, a ``text`` field per document):

- ``"bundled"``: the offline corpus built by ``toy_models.corpus`` (``data/corpus``);
- a path or glob of local ``.json``/``.jsonl``/``.json.gz``/``.parquet`` shards (for example
  C4's ``c4-train.00000-of-01024.json.gz``);
- ``"c4"``: ``allenai/c4`` ``en`` streamed from the hub with HF ``datasets`` (needs a network).

Finite sources are loaded with ``datasets`` and cached as a flat ``int32`` ``.npy`` of token ids
under ``data/cache`` keyed by the source files' and tokenizer's hashes (``BlockData``). C4, and
local shards with ``stream=True``, are read as a stream instead (``toy_models.stream``). Both
serve ``local_batch(step, batch_size, rank, world_size)``, ``validation_batches`` and a
checkpointable ``state_dict``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toy_models.corpus import CorpusError, corpus_path, require_hub, sha256_file
from toy_models.files import replace_atomically
from toy_models.paths import built_data

CACHE_DIR = built_data() / "cache"
HUB_DATASETS = {"c4": ("allenai/c4", "en")}


def data_files(source: str, split: str) -> tuple[str, list[str]]:
    """Resolve a source to a ``datasets`` builder name and the files of ``split``.

    A directory holds shards named like ``*train*`` / ``*validation*``; a file or glob names the
    training files and the validation ones are the same name with ``train`` replaced by
    ``validation`` (C4: ``c4-train.*.json.gz`` / ``c4-validation.*.json.gz``)."""
    if source == "bundled":
        return "json", [str(corpus_path(split))]
    name = Path(source).name
    if Path(source).is_dir():
        pattern = str(Path(source) / f"*{split}*")
    elif split == "train":
        pattern = source
    elif "train" in name:
        pattern = str(Path(source).with_name(name.replace("train", split)))
    else:
        raise CorpusError(
            f"cannot tell which files hold the {split} split of {source!r}: name the "
            f"training files with 'train' (their {split} files with '{split}' "
            "instead), or give a directory of such shards"
        )
    files = sorted(glob.glob(pattern))
    if not files:
        raise CorpusError(
            f"missing dataset path: nothing matches {pattern!r}; give a file, a glob, "
            "a directory of shards named like '*train*', 'bundled', or 'c4'"
        )
    suffix = files[0].removesuffix(".gz").rsplit(".", 1)[-1]
    builder = {"parquet": "parquet", "arrow": "arrow", "txt": "text"}.get(suffix, "json")
    return builder, files


def load_documents(source: str, split: str, streaming: bool = False):
    """A HF ``datasets`` dataset of documents (``text`` field) for a source and split.
    A file that cannot be read (truncated, empty, not UTF-8, wrongly shaped) and a hub that
    cannot be reached are one ``CorpusError`` naming the file or what could not be fetched."""
    import datasets

    if source in HUB_DATASETS:
        name, config = HUB_DATASETS[source]
        require_hub(f"the dataset {name} ({config})")
        try:
            return datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as err:  # the hub's errors are many; each becomes one line
            raise CorpusError(
                f"cannot load {name} ({config}) from the hub ({_first_line(err)}); "
                "offline: --data bundled or a local copy of its files"
            ) from None
    builder, files = data_files(source, split)
    for name in files:
        readable(Path(name))
    try:
        with _progress_bars_on_a_terminal_only(datasets):
            ds = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=streaming)
        if not streaming and len(ds) == 0:
            raise ValueError("no documents")
    except (CorpusError, KeyboardInterrupt):
        raise
    except Exception as err:  # pyarrow, json and datasets raise many kinds for a bad file
        raise CorpusError(
            f"cannot read {_named(files)} as {builder} ({_first_line(err)}); check the "
            f"file is complete, UTF-8 {builder} with a 'text' field per document"
        ) from None
    if ds.column_names is not None and "text" not in ds.column_names:
        raise CorpusError(
            f"{files[0]} has no 'text' field (columns: {ds.column_names}); documents need the C4 schema"
        )
    return ds


@contextlib.contextmanager
def _progress_bars_on_a_terminal_only(datasets):
    """datasets draws a bar per split the first time it caches a file: useful to a person
    watching, noise in a log or in front of a one-line error, so it is drawn on a terminal only."""
    if sys.stderr.isatty() or datasets.are_progress_bars_disabled():
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def readable(path: Path) -> None:
    """``CorpusError`` naming ``path`` when it is empty or cannot be opened (datasets would say
    only ``StopIteration`` or a permission traceback)."""
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as err:
        raise CorpusError(
            f"cannot read data file {path} ({err.strerror}); check that it exists and that you may read it"
        ) from None
    if empty:
        raise CorpusError(
            f"data file {path} is empty: it holds no documents; give a file with "
            "documents (a 'text' field each), or rebuild the bundled corpus with "
            "`make data`"
        )


def _named(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} (and {len(files) - 1} more)"


def _first_line(err: Exception) -> str:
    cause = err
    while cause.__cause__ is not None or cause.__context__ is not None:  # the root cause speaks
        cause = cause.__cause__ or cause.__context__
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0][:160]}" if text else type(cause).__name__


def tokenize_texts(texts, tokenizer) -> list[np.ndarray]:
    """Token ids of each text with EOS appended (batched through the fast tokenizer)."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [np.asarray(ids + [eos], dtype=np.int32) for ids in encoded]


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr(vocab).encode()).hexdigest()[:16]


def token_array(source: str, split: str, tokenizer, cache_dir: Path = CACHE_DIR) -> np.ndarray:
    """All tokens of a finite source split, cached on disk after the first call."""
    if source in HUB_DATASETS:
        raise CorpusError(f"{source!r} is a streaming source; read it with toy_models.stream.StreamData")
    _, files = data_files(source, split)
    key = hashlib.sha256("".join(sha256_file(Path(f)) for f in files).encode()).hexdigest()[:16]
    path = cache_dir / f"{split}-{key}-{_tokenizer_fingerprint(tokenizer)}.npy"
    if path.exists():
        return np.load(path)
    ds = load_documents(source, split)
    pieces = []
    try:  # arrow decodes text lazily: a bad byte shows here
        for start in range(0, len(ds), 512):
            pieces += tokenize_texts(ds[start : start + 512]["text"], tokenizer)
    except (UnicodeDecodeError, ValueError, TypeError) as err:
        raise CorpusError(
            f"cannot read the text of {_named(files)} ({_first_line(err)}); check "
            "the file is UTF-8 with a string 'text' field per document"
        ) from None
    tokens = np.concatenate(pieces)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would add ".npy" to a name
            np.save(handle, tokens)

    replace_atomically(path, save)  # processes tokenizing the same split at once each rename theirs
    return tokens


def pack(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Cut a flat token array into ``(n_blocks, seq_len)`` (the tail shorter than a block is dropped)."""
    n = len(tokens) // seq_len
    if n == 0:
        raise CorpusError(f"only {len(tokens)} tokens: fewer than one block of seq_len={seq_len}")
    return tokens[: n * seq_len].reshape(n, seq_len)


@dataclass
class BlockData:
    """Packed train and validation blocks with a seeded, step-addressable batch order."""

    train: np.ndarray
    validation: np.ndarray
    seed: int = 0

    def train_batch(self, step: int, batch_size: int):
        """Global batch ``step`` as a ``(batch_size, seq_len)`` int64 tensor."""
        import torch

        n = len(self.train)
        if batch_size > n:
            raise CorpusError(f"batch of {batch_size} sequences exceeds the {n} training blocks")
        per_epoch = n // batch_size
        epoch, index = divmod(step, per_epoch)
        order = np.random.default_rng(self.seed + epoch).permutation(n)
        rows = order[index * batch_size : (index + 1) * batch_size]
        return torch.from_numpy(self.train[rows].astype(np.int64))

    def local_batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """Rank ``rank``'s contiguous ``batch_size / world_size`` sequences of global batch ``step``."""
        return self.train_batch(step, batch_size).view(world_size, batch_size // world_size, -1)[rank]

    def validation_batches(self, batch_size: int, max_tokens: int):
        """The fixed validation set: the first blocks up to ``max_tokens``, in order."""
        seq_len = self.validation.shape[1]
        return batches_of(
            self.validation, batch_size, min(len(self.validation), max(1, max_tokens // seq_len))
        )

    def state_dict(self) -> dict:
        return {}  # the position is a pure function of (seed, step)

    def load_state_dict(self, state: dict) -> None:
        pass


def batches_of(blocks: np.ndarray, batch_size: int, n: int):
    """The first ``n`` blocks as int64 tensors of up to ``batch_size`` rows, in order."""
    import torch

    for start in range(0, n, batch_size):
        yield torch.from_numpy(blocks[start : min(start + batch_size, n)].astype(np.int64))


def load_blocks(tokenizer, seq_len: int, source: str = "bundled", seed: int = 0) -> BlockData:
    """Tokenized, cached, packed train/validation blocks of a finite source."""
    return BlockData(
        train=pack(token_array(source, "train", tokenizer), seq_len),
        validation=pack(token_array(source, "validation", tokenizer), seq_len),
        seed=seed,
    )
