"""Check results carry numbers the UI can plot, to significant digits."""

from dataclasses import dataclass

import dagster as dg

from moovitamix_assets.check_results import figure, significant, to_check_result


@dataclass(frozen=True)
class Outcome:
    name: str = "orphan_rate"
    passed: bool = True
    observed: float | int | str | None = 0.0123456789
    threshold: float | int | str | None = 0.15
    severity: str = "ERROR"
    description: str = "1.2% orphans"


def test_floats_keep_four_significant_digits_and_other_values_their_type() -> None:
    result = to_check_result(
        dg.AssetKey(["core", "listen_events"]),
        Outcome(),
        {"rows": 123_456_789, "share": 2 / 3, "large": 123_456.789, "note": "ok"},
    )
    metadata = {key: value.value for key, value in result.metadata.items()}
    assert metadata["observed"] == 0.01235 and metadata["threshold"] == 0.15
    assert metadata["share"] == 0.6667 and metadata["large"] == 123_500.0
    assert metadata["rows"] == 123_456_789  # counts are exact
    assert metadata["note"] == "ok"


def test_a_missing_or_infinite_figure_is_null_not_a_number() -> None:
    assert figure(None) == dg.MetadataValue.null()
    assert figure(float("nan")) == dg.MetadataValue.null()
    assert figure(0.000123456).value == 0.0001235
    assert significant(-98765.4) == -98770.0
