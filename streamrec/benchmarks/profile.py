"""Where the worker's time goes: a py-spy profile summarised by kind of work.

``streamrec bench --profile`` attaches py-spy to the worker (``--format raw``: one line per
distinct stack, ``frame;frame;...;leaf count``, outermost frame first). Each stack is given
to the first kind of work, walking from the outermost frame in, whose pattern one of its
frames matches (:data:`KINDS`): so the agent's call to ``table.get`` counts as a table read
even where RocksDB or Faust's changelog code is what ran. Stacks that match none are
Faust's and aiokafka's own machinery (consuming, acking, committing, the event loop).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

#: (kind, regular expression over one frame "function (file:line)"), in priority order.
KINDS: tuple[tuple[str, str], ...] = (
    ("startup (imports, model, rebalance)", r"^(_find_and_load|load_artifact|create_app|on_rebalance|on_partitions_assigned|_on_assign) \("),
    ("idle (waiting for the network)", r"^(EpollSelector\.select|select) \(.*selectors\.py"),
    ("FAISS search", r"^(search \(.*(indexing/index|streamrec/core/search)\.py|Index\w*\.search \()"),
    ("decode events (JSON + contract)", r"^(decode_batch|decode_events|decode_event|event_from_dict|_string|_number) \(.*(processor|contract|batch)\.py"),
    ("state codec (decode/encode)", r"^(decode_state|encode_state) \("),
    ("table read (Faust + RocksDB)", r"^(read_state|load_states) \(|^(get|__getitem__|_get|_get_bytes) \(.*faust/(tables|stores)/"),
    ("table write (Faust + RocksDB + changelog)", r"^PartitionStore\.write \(|^(__setitem__|_set|set|_set_key|on_key_set|send_changelog) \(.*faust/(tables|stores)/"),
    ("vector update (numpy)", r"^(update_batch|update_vector|fold_events|rebuild_state) \("),
    ("build + encode recommendations", r"^(encode_recommendation|to_dict|finish_batch) \(.*(contract|batch)\.py"),
    ("the core's per-user work (dedup, new states)", r"^(select_fresh|new_states|group_by_user|apply_events|learn_new_items) \("),
    ("produce (librdkafka) + delivery reports", r"^(_produce|_flush|_wait_for_deliveries|_Deliveries\.__call__|emit) \(.*(engine|shell)\.py"),
    ("consume (librdkafka)", r"^BatchEngine\.take \("),
    ("send recommendations", r"^(send|send_soon|_send|maybe_declare|publish_message) \(.*faust/(topics|channels|transport)"),
    ("other core (process_batch, python)", r"^process_batch \("),
    ("agent loop (batching, acks, Faust streams)", r"faust/(streams|agents)"),
    ("produce: Faust producer buffer + aiokafka sender", r"faust/transport/producer|aiokafka/(producer|client|conn)|faust/topics"),
    ("consume: aiokafka fetch + Faust per-message dispatch", r"faust/transport/(consumer|conductor|drivers)|aiokafka/consumer"),
    ("Kafka client (aiokafka, other)", r"aiokafka/"),
    ("asyncio callbacks + Faust/mode (other)", r"(faust|mode)/"),
    ("asyncio event loop", r"asyncio/"),
)
_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:)]+)")


def classify(frames: list[str]) -> str:
    """The kind of work of one stack (frames outermost first)."""
    for kind, pattern in _COMPILED:
        for frame in frames:
            if pattern.search(frame):
                return kind
    return "other"


# py-spy names methods "Class.method": a leading "^(" also accepts such a qualifier.
_COMPILED = [(kind, re.compile(pattern.replace("^(", r"^(?:[\w.<>]+\.)?("))) for kind, pattern in KINDS]


def parse_raw(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw (collapsed) format: ``a;b;c 12`` per line."""
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        stacks.append((stack.split(";"), n))
    return stacks


def summarise(path: Path, top: int = 15) -> dict[str, object]:
    """Shares of samples per kind of work, and the leaf functions that took most samples."""
    stacks = parse_raw(Path(path).read_text(errors="replace"))
    by_kind: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for frames, n in stacks:
        # Frames of the process/thread header ("process 12:...", "thread (0x..)") are not code.
        code = [f for f in frames if _FRAME.match(f)]
        if not code:
            continue
        total += n
        by_kind[classify(code)] += n
        leaves[code[-1]] += n
    if total == 0:
        return {"samples": 0, "shares": {}, "top_leaves": []}
    return {
        "samples": total,
        "shares": {kind: round(n / total, 4) for kind, n in by_kind.most_common()},
        "top_leaves": [[leaf, round(n / total, 4)] for leaf, n in leaves.most_common(top)],
    }
