"""Serialisation of a registry model to checksummed bytes.

An ALS model's payload is an ``.npz`` (factors, id maps, JSON-encoded parameters); the fallback's
is an ``.npz`` with its header only (it has nothing learned to store). Loading never unpickles
anything, so a tampered registry row cannot execute code. At 1M users the payload is ~250 MB: it
is written to and read from a file object (a temporary file in the assets), so memory holds the
model's arrays once, never the payload beside them.
"""

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

import numpy as np

from moovitamix_assets.ml.models import AlsModel, AlsParams, FallbackModel, ServingModel

ARTIFACT_FORMAT: Final = "moovitamix-als-npz"
FALLBACK_FORMAT: Final = "moovitamix-genre-popularity-npz"
ARTIFACT_VERSION: Final = 1


# Files are hashed and copied in slices of this size.
CHUNK_BYTES: Final = 16 << 20


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    """A serialised model: the file object holding its bytes, their size and sha256 hex digest."""

    file: BinaryIO
    sha256: str
    size_bytes: int

    def chunks(self) -> Iterator[bytes]:
        """The payload in slices of ``CHUNK_BYTES``, from its start."""
        self.file.seek(0)
        return iter(lambda: self.file.read(CHUNK_BYTES), b"")


def _file_checksum(file: BinaryIO) -> str:
    file.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _encode_json(value: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def serialize_model(model: ServingModel, file: BinaryIO | None = None) -> ModelArtifact:
    """Serialise ``model`` to ``.npz`` bytes in ``file`` (a new in-memory buffer when None).

    Args:
        model: The model to store.
        file: An empty, seekable binary file object, e.g. a ``tempfile.TemporaryFile()``.

    Returns:
        The artifact over ``file``, with its size and sha256 checksum.
    """
    buffer = io.BytesIO() if file is None else file
    if isinstance(model, FallbackModel):
        header = {"format": FALLBACK_FORMAT, "version": ARTIFACT_VERSION, "name": model.name}
        np.savez(buffer, header=_encode_json(header))
        return _artifact(buffer)
    header = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION}
    # Stored, not deflated: float factors hardly compress, and zlib took seconds per 100 MB.
    np.savez(
        buffer,
        header=_encode_json(header),
        params=_encode_json(model.params.as_dict()),
        user_ids=model.user_ids.astype(np.int64),
        item_ids=model.item_ids.astype(np.int64),
        user_factors=model.user_factors.astype(np.float32),
        item_factors=model.item_factors.astype(np.float32, copy=False),
    )
    return _artifact(buffer)


def _artifact(file: BinaryIO) -> ModelArtifact:
    size = file.seek(0, io.SEEK_END)
    return ModelArtifact(file=file, sha256=_file_checksum(file), size_bytes=size)


def deserialize_model(
    payload: bytes | BinaryIO, expected_sha256: str | None = None
) -> ServingModel:
    """Rebuild a model from ``serialize_model`` bytes, or a seekable file object holding them.

    Args:
        payload: The serialised bytes or a file of them (read from its start).
        expected_sha256: If given, the payload must hash to it.

    Returns:
        The model, with factors and id maps identical to the serialised ones.

    Raises:
        ValueError: On a checksum mismatch, an unknown format or inconsistent arrays.
    """
    file = io.BytesIO(payload) if isinstance(payload, bytes) else payload
    if expected_sha256 is not None and _file_checksum(file) != expected_sha256:
        raise ValueError("model artifact checksum mismatch: the payload is corrupt or replaced")
    file.seek(0)
    with np.load(file, allow_pickle=False) as archive:
        header = json.loads(archive["header"].tobytes().decode("utf-8"))
        if header.get("format") == FALLBACK_FORMAT and header.get("version") == ARTIFACT_VERSION:
            return FallbackModel(name=str(header.get("name", FallbackModel.name)))
        if header.get("format") != ARTIFACT_FORMAT or header.get("version") != ARTIFACT_VERSION:
            raise ValueError(f"unsupported model artifact header: {header}")
        params = AlsParams(**json.loads(archive["params"].tobytes().decode("utf-8")))
        model = AlsModel(
            params=params,
            user_ids=archive["user_ids"],
            item_ids=archive["item_ids"],
            user_factors=archive["user_factors"],
            item_factors=archive["item_factors"],
        )
    if model.user_factors.shape != (model.n_users, params.factors) or model.item_factors.shape != (
        model.n_items,
        params.factors,
    ):
        raise ValueError("model artifact factors do not match its id maps and parameters")
    return model
