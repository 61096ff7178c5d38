"""Labelled examples: the repository's corpus, the wild set, and their digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.router.domain.taxonomy import Domain, Tier, tier_of

CORPUS_DIR = Path(__file__).parent / "corpus"
# Texts phrased as differently from the corpus as we could (marketplace titles, chat requests,
# procurement language); never trained on: the honest proxy for unseen real-world text.
WILD_PATH = Path(__file__).parent / "wild.jsonl"


class CorpusError(ValueError):
    """A corpus line that is not a valid labelled example."""


@dataclass(frozen=True)
class Example:
    text: str
    domain: Domain

    @property
    def tier(self) -> Tier:
        return tier_of(self.domain)


def parse_line(line: str, *, where: str) -> Example:
    """One JSON line → an example; the tier, when given, must match the domain's."""
    try:
        record = json.loads(line)
        text = record["text"]
        domain = Domain(record["domain"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(f"{where}: not a labelled example ({type(exc).__name__})") from None
    if not isinstance(text, str) or not text.strip():
        raise CorpusError(f"{where}: empty text")
    if "tier" in record and record["tier"] != tier_of(domain).value:
        raise CorpusError(f"{where}: tier {record['tier']!r} contradicts domain {domain.value}")
    return Example(text=text.strip(), domain=domain)


def load_file(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        parse_line(line, where=f"{path.name}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]


def load_corpus(directory: Path = CORPUS_DIR) -> list[Example]:
    """Every example of the corpus, in a fixed order (file name, then line)."""
    examples: list[Example] = []
    for path in sorted(directory.glob("*.jsonl")):
        examples.extend(load_file(path))
    if not examples:
        raise CorpusError(f"no examples under {directory}")
    return examples


def load_wild(path: Path = WILD_PATH) -> list[Example]:
    return load_file(path)


def digest(examples: Iterable[Example], *, config: Sequence[object] = ()) -> str:
    """SHA-256 of the examples (in order) and the training configuration: the artefact's key."""
    hasher = hashlib.sha256()
    hasher.update(json.dumps([repr(item) for item in config]).encode())
    for example in examples:
        hasher.update(json.dumps([example.text, example.domain.value]).encode())
        hasher.update(b"\n")
    return hasher.hexdigest()
