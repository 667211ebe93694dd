"""Read back a W&B run file (``run-*.wandb``) written offline: W&B's transaction log is the
LevelDB log format (32 KiB blocks of records, each a 7-byte header: CRC32, length, type 1 full,
2 first, 3 middle, 4 last) of protobuf ``Record`` messages, after a 7-byte file header ``:W&B``;
the history rows are its ``history`` records. For the tracker test only (W&B reads it when it
syncs; no public offline reader exists in wandb 0.31)."""

import json
import struct

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def records(path):
    """The raw records of a ``.wandb`` file, fragments joined."""
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", data[:8]
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def history(path) -> list[dict]:
    """The history rows of a run file, ``{key: value}`` each (``_step`` included)."""
    rows = []
    for raw in records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows
