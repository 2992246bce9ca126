"""Serialisation of a registry model to a checksummed ``.npz`` (the fallback's holds its header).

Loading never unpickles, so a tampered registry row cannot execute code. The ~250 MB payload of
a model at 1M users goes through a file object, so memory never holds it beside the arrays.
"""

import hashlib
import io
import json
from typing import BinaryIO, Final, NamedTuple

import numpy as np

from moovitamix_assets.ml.models import AlsModel, AlsParams, FallbackModel, ServingModel

ARTIFACT_FORMAT: Final = "moovitamix-als-npz"
FALLBACK_FORMAT: Final = "moovitamix-genre-popularity-npz"
ARTIFACT_VERSION: Final = 1
# Files are hashed and copied in slices of this size.
CHUNK_BYTES: Final = 16 << 20


class ModelArtifact(NamedTuple):
    """A serialised model: the file object holding its bytes, their size and sha256 hex digest."""

    file: BinaryIO
    sha256: str
    size_bytes: int


def _json(value: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode(), dtype=np.uint8)


def serialize_model(model: ServingModel, file: BinaryIO | None = None) -> ModelArtifact:
    """Serialise ``model`` into ``file`` (empty and seekable; a new in-memory buffer when None)."""
    file = io.BytesIO() if file is None else file
    if isinstance(model, FallbackModel):
        np.savez(file, header=_json({"format": FALLBACK_FORMAT, "version": ARTIFACT_VERSION}))
    else:
        # Stored, not deflated: float factors hardly compress, and zlib took seconds per 100 MB.
        np.savez(
            file,
            header=_json({"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION}),
            params=_json(model.params.as_dict()),
            user_ids=model.user_ids.astype(np.int64),
            item_ids=model.item_ids.astype(np.int64),
            user_factors=model.user_factors.astype(np.float32),
            item_factors=model.item_factors.astype(np.float32, copy=False),
        )
    size = file.seek(0, io.SEEK_END)
    return ModelArtifact(file, _sha256(file), size)


def _sha256(file: BinaryIO) -> str:
    # hashlib.file_digest would do, but it needs Python 3.11 and the platform supports 3.10.
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def deserialize_model(file: BinaryIO, expected_sha256: str) -> ServingModel:
    """Rebuild a model from a seekable file of ``serialize_model`` bytes; ValueError on a
    checksum mismatch, an unknown format or inconsistent arrays."""
    if _sha256(file) != expected_sha256:
        raise ValueError("model artifact checksum mismatch: the payload is corrupt or replaced")
    file.seek(0)
    with np.load(file, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes())
        if header.get("format") == FALLBACK_FORMAT and header.get("version") == ARTIFACT_VERSION:
            return FallbackModel()
        if header.get("format") != ARTIFACT_FORMAT or header.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"unsupported model artifact header: {header}")
        params = AlsParams(**json.loads(archive["params"].tobytes()))
        arrays = ("user_ids", "item_ids", "user_factors", "item_factors")
        model = AlsModel(params=params, **{name: archive[name] for name in arrays})
    factors = (model.user_factors.shape, model.item_factors.shape)
    if factors != ((len(model.user_ids), params.factors), (len(model.item_ids), params.factors)):
        raise ValueError("model artifact factors do not match its id maps and parameters")
    return model
