"""Serialisation of a registry model to checksummed bytes.

An ALS model's payload is an in-memory ``.npz`` (factors, id maps, JSON-encoded parameters); the
fallback's is an ``.npz`` with its header only (it has nothing learned to store). Loading never
unpickles anything, so a tampered registry row cannot execute code.
"""

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Final

import numpy as np

from moovitamix_assets.ml.models import AlsModel, AlsParams, FallbackModel, ServingModel

ARTIFACT_FORMAT: Final = "moovitamix-als-npz"
FALLBACK_FORMAT: Final = "moovitamix-genre-popularity-npz"
ARTIFACT_VERSION: Final = 1


@dataclass(frozen=True)
class ModelArtifact:
    """A serialised model and the sha256 hex digest of its bytes."""

    payload: bytes
    sha256: str

    @property
    def size_bytes(self) -> int:
        return len(self.payload)


def checksum(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _encode_json(value: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(value, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def serialize_model(model: ServingModel) -> ModelArtifact:
    """Serialise ``model`` to compressed ``.npz`` bytes with their sha256 checksum."""
    buffer = io.BytesIO()
    if isinstance(model, FallbackModel):
        header = {"format": FALLBACK_FORMAT, "version": ARTIFACT_VERSION, "name": model.name}
        np.savez_compressed(buffer, header=_encode_json(header))
        payload = buffer.getvalue()
        return ModelArtifact(payload=payload, sha256=checksum(payload))
    header = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION}
    np.savez_compressed(
        buffer,
        header=_encode_json(header),
        params=_encode_json(model.params.as_dict()),
        user_ids=model.user_ids.astype(np.int64),
        item_ids=model.item_ids.astype(np.int64),
        user_factors=model.user_factors.astype(np.float32),
        item_factors=model.item_factors.astype(np.float32),
    )
    payload = buffer.getvalue()
    return ModelArtifact(payload=payload, sha256=checksum(payload))


def deserialize_model(payload: bytes, expected_sha256: str | None = None) -> ServingModel:
    """Rebuild a model from ``serialize_model`` bytes.

    Args:
        payload: The serialised bytes.
        expected_sha256: If given, the payload must hash to it.

    Returns:
        The model, with factors and id maps identical to the serialised ones.

    Raises:
        ValueError: On a checksum mismatch, an unknown format or inconsistent arrays.
    """
    if expected_sha256 is not None and checksum(payload) != expected_sha256:
        raise ValueError("model artifact checksum mismatch: the payload is corrupt or replaced")
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
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
