"""The bundled tokenizer: a byte-level BPE trained with HF ``tokenizers`` on the training split.

The output layer is what the SCALE argument is about, and its behaviour comes from a large
vocabulary with Zipfian token frequencies, so the default is a real 8192-token BPE (never
bytes only). The trained ``tokenizer.json`` is committed under ``data/tokenizer/`` and loaded
through ``transformers.PreTrainedTokenizerFast``; ``python -m toy_models.tokenizer`` retrains it
(deterministic for a given corpus). A second, 2048-token BPE trained the same way
(``data/tokenizer/bpe-2048``, ``--vocab 2048 --out data/tokenizer/bpe-2048``) serves the
``micro2k`` model, whose vocabulary is small enough that hidden matrices hold most parameters,
as in the paper's models; a model config names its tokenizer in its ``tokenizer`` field.

The paper's online path uses the T5 tokenizer (``load_tokenizer("t5-base")``), which needs
a model hub.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toy_models.corpus import CorpusError, corpus_path, require_hub
from toy_models.files import replace_atomically
from toy_models.paths import shipped_data

TOKENIZER_DIR = shipped_data() / "tokenizer"
EOS = "<|endoftext|>"
DEFAULT_VOCAB = 8192
# Sizes of the hub tokenizers the paper's path uses, to size a run offline (``--dry-run``):
# T5's 32000 SentencePiece pieces and its 100 sentinel tokens.
HUB_TOKENIZER_SIZES = {"t5-base": 32100}


def _iter_texts(jsonl: Path, batch: int = 256):
    rows = []
    with open(jsonl, encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line)["text"])
            if len(rows) == batch:
                yield rows
                rows = []
    if rows:
        yield rows


def train_tokenizer(
    train_jsonl: Path, vocab_size: int = DEFAULT_VOCAB, out_dir: Path = TOKENIZER_DIR
) -> Path:
    """Train a byte-level BPE with ``vocab_size`` entries (EOS included); return tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_iter_texts(train_jsonl), trainer=trainer)
    return replace_atomically(out_dir / "tokenizer.json", lambda tmp: tokenizer.save(str(tmp)))


def tokenizer_size(name_or_path: str | Path | None = None) -> int:
    """Tokens in ``load_tokenizer(name_or_path)``; a tokenizer in ``HUB_TOKENIZER_SIZES`` is
    not downloaded."""
    if str(name_or_path) in HUB_TOKENIZER_SIZES:
        return HUB_TOKENIZER_SIZES[str(name_or_path)]
    return len(load_tokenizer(name_or_path))


def load_tokenizer(name_or_path: str | Path | None = None):
    """Load a bundled BPE (None: the default 8192-token one; a directory, a tokenizer.json, or
    the name of a directory under ``data/tokenizer`` such as ``bpe-2048``) or, online, a hub
    tokenizer by name."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(name_or_path) if name_or_path is not None else TOKENIZER_DIR
    if not path.exists() and (TOKENIZER_DIR / path).is_dir():
        path = TOKENIZER_DIR / path
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.suffix == ".json":
        if not path.exists():
            raise FileNotFoundError(f"missing tokenizer file {path}: run `python -m toy_models.tokenizer`")
        return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS)
    # e.g. "t5-base" as the paper: needs a reachable hub (or a local HF cache).
    require_hub(f"the tokenizer {name_or_path}")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise CorpusError(
            f"cannot load the tokenizer {name_or_path!r} ({str(err).splitlines()[0][:160]}); "
            "give a local tokenizer directory or tokenizer.json with --tokenizer"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m toy_models.tokenizer``: retrain the bundled BPE on the training split."""
    parser = argparse.ArgumentParser(description="Train the bundled byte-level BPE tokenizer.")
    parser.add_argument("--vocab", type=int, default=DEFAULT_VOCAB)
    parser.add_argument("--out", type=Path, default=TOKENIZER_DIR)
    args = parser.parse_args(argv)
    path = train_tokenizer(corpus_path("train"), args.vocab, args.out)
    print(f"wrote {path} (vocab {load_tokenizer(path).vocab_size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
