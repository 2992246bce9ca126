import hashlib
import io
import zipfile

import numpy as np
import pytest

from moovitamix_assets.ml.artifacts import ModelArtifact, deserialize_model, serialize_model


def payload_of(artifact: ModelArtifact) -> bytes:
    artifact.file.seek(0)
    return artifact.file.read()


def test_round_trip_restores_identical_model(structured) -> None:
    model = structured.als
    artifact = serialize_model(model)
    assert artifact.sha256 == hashlib.sha256(payload_of(artifact)).hexdigest()
    assert len(artifact.sha256) == 64
    restored = deserialize_model(artifact.file, expected_sha256=artifact.sha256)
    assert restored.params == model.params
    np.testing.assert_array_equal(restored.user_ids, model.user_ids)
    np.testing.assert_array_equal(restored.item_ids, model.item_ids)
    np.testing.assert_array_equal(restored.user_factors, model.user_factors)
    np.testing.assert_array_equal(restored.item_factors, model.item_factors)
    assert restored.item_factors.dtype == np.float32
    assert restored.user_ids.dtype == np.int64


def test_serialisation_is_byte_stable(structured) -> None:
    first = serialize_model(structured.als)
    second = serialize_model(structured.als)
    assert first.sha256 == second.sha256


def test_payload_is_a_plain_npz_without_pickled_objects(structured) -> None:
    payload = payload_of(serialize_model(structured.als))
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        names = set(archive.namelist())
    assert names == {
        "header.npy",
        "params.npy",
        "user_ids.npy",
        "item_ids.npy",
        "user_factors.npy",
        "item_factors.npy",
    }
    with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_corrupt_payload_is_refused(structured) -> None:
    artifact = serialize_model(structured.als)
    tampered = bytearray(payload_of(artifact))
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="checksum mismatch"):
        deserialize_model(io.BytesIO(tampered), expected_sha256=artifact.sha256)
