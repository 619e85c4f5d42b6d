"""Content digests (BLAKE2b, as SageMaker's ModelDigests.ArtifactDigest)."""
from __future__ import annotations

import hashlib
from pathlib import Path


def blake2b_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return "blake2b-256:" + h.hexdigest()
