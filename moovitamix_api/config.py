"""Configuration of the stand-in: the generated data (frozen) and the injected faults (mutable)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS: tuple[str, ...] = ("users", "tracks", "listen_history")

# The production service's clock is UTC; every generated day is counted from this date.
EPOCH = dt.date(2020, 1, 1)

# A few records in a thousand repeat their neighbour's id (users: or e-mail): the contract allows
# it, so the default data has them, as the real service's may.
DEFAULT_DUPLICATE_RATE = 0.002

# Listening with or without taste structure (CLI --taste, env MOOVITAMIX_STANDIN_TASTE): the
# DataConfig fields each taste sets. "structured" keeps the configured (default) knobs.
TASTE_ENV = "MOOVITAMIX_STANDIN_TASTE"
TASTES: dict[str, dict[str, float]] = {
    "structured": {},
    "none": {"favourite_share": 0.0, "zipf_exponent": 0.0},
}
DEFAULT_TASTE = "structured"


def today_utc() -> dt.date:
    """Today's date on the service's (UTC) clock."""
    return dt.datetime.now(dt.timezone.utc).date()


def _as_date(value: dt.date | str | None) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(value)


@dataclass(frozen=True)
class DataConfig:
    """What the stand-in serves; every field is a knob of the deterministic generator.

    Listening model (``moovitamix_api.data`` has the details): every user has a *listening genre*
    and a *scene* within it. Each listen is, with probability ``favourite_share``, a Zipf draw
    (``zipf_exponent``) over the scene's ranking of that genre's tracks, otherwise a Zipf draw over
    the whole catalogue. The genre a user *declares* (``favorite_genres`` of /users) is the
    listening genre for ``declared_genre_share`` of users only. ``TASTES["none"]`` turns all of
    that off: every listen is a uniform draw over the catalogue, as a young service's data often
    looks, and a trained recommender then has nothing to learn beyond what popularity knows.

    Attributes:
        seed: Seed of every generated value (same seed and day, same bytes).
        records: Number of users and of tracks on any day (listen_history has one row per user).
        users: Overrides ``records`` for /users (and so /listen_history).
        tracks: Overrides ``records`` for /tracks.
        day: The served day; ``None`` means today's UTC date at request time.
        mean_listens: Mean length of a listening history.
        favourite_share: Share of a user's listens drawn from their listening genre (the rest
            come from the whole catalogue); 0 means no genre preference at all.
        taste_scenes: Listening communities per genre: a user belongs to one scene of their
            listening genre, and each scene has its own favourite tracks in that genre (the same
            Zipf curve over a shifted ranking), so users of one scene share a taste. 1 = one
            ranking per genre.
        declared_genre_share: Share of users whose declared ``favorite_genres`` is the genre they
            actually listen to; the others declared another genre, drawn uniformly (sign-up forms
            are rarely kept up to date). ``Dataset.favourite_genre`` gives the listening genre.
        zipf_exponent: Exponent of the Zipf-like track popularity (1.0 = classic Zipf, 0 =
            uniform: every track equally likely).
        user_churn: Share of users replaced (one removed, one new id) every day.
        track_churn: Share of tracks replaced every day; listens of removed tracks become orphans.
        change_rate: Share of users and tracks modified every day (``updated_at`` moves there).
        listen_null_rate: Share of histories with a null ``user_id`` and, separately, ``items``.
        duplicate_rate: Share of records repeating the previous record's id (users: or its email).
            Small but not zero by default: the contract does not promise unique keys, and the
            platform must take such records in its stride.
        event_window_s: The day's changes land within this many seconds after midnight UTC (a
            nightly batch), so a record changed "today" is never stamped in the future for long.
    """

    seed: int = 42
    records: int = 1000
    users: int | None = None
    tracks: int | None = None
    day: dt.date | None = None
    mean_listens: float = 5.0
    favourite_share: float = 0.75
    taste_scenes: int = 4
    declared_genre_share: float = 0.6
    zipf_exponent: float = 1.0
    user_churn: float = 0.01
    track_churn: float = 0.002
    change_rate: float = 0.02
    listen_null_rate: float = 0.001
    duplicate_rate: float = DEFAULT_DUPLICATE_RATE
    event_window_s: int = 3600

    def __post_init__(self) -> None:
        object.__setattr__(self, "day", _as_date(self.day))
        for name in ("records", "users", "tracks"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in (
            "favourite_share",
            "declared_genre_share",
            "user_churn",
            "track_churn",
            "change_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in ("listen_null_rate", "duplicate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.mean_listens < 0:
            raise ValueError("mean_listens must be >= 0")
        if self.taste_scenes < 1:
            raise ValueError(f"taste_scenes must be >= 1, got {self.taste_scenes}")
        if self.zipf_exponent < 0:
            raise ValueError(f"zipf_exponent must be >= 0, got {self.zipf_exponent}")
        if not 1 <= self.event_window_s <= 86_400:
            raise ValueError("event_window_s must be within [1, 86400]")

    @property
    def n_users(self) -> int:
        return self.records if self.users is None else self.users

    @property
    def n_tracks(self) -> int:
        return self.records if self.tracks is None else self.tracks

    def served_day(self) -> dt.date:
        """The configured day, or today's UTC date when none is configured."""
        return self.day if self.day is not None else today_utc()


@dataclass
class FaultConfig:
    """Faults injected on one endpoint (or on all of them); everything is off by default.

    Attributes:
        error_rate: Share of requests answered 500 or 503 (seeded, reproducible sequence).
        error_statuses: Statuses drawn for ``error_rate`` and ``fail_first_n``.
        fail_first_n: The first N requests (after configuration) answer 500/503, alternating.
        rate_limit_first_n: The first N requests (after any ``fail_first_n`` ones) answer 429.
        rate_limit_per_s: Token-bucket limit (burst = max(1, rate)); excess requests answer 429.
        retry_after_s: ``Retry-After`` header (seconds) of every 429.
        latency_ms: Sleep added to every response.
        slow_pages: Page -> seconds to sleep before answering (to trigger client read timeouts).
        malformed_records: ``[page, index, kind]`` triples: that item of that page gets a
            wrong-typed key (``kind="wrong_type"``, e.g. ``"id": "abc"``) or loses a field
            (``kind="missing_field"``).
        malformed_pages: Pages answered 200 with valid JSON that is not a page (no ``items``).
        truncated_pages: Pages answered 200 with the body cut in half.
        total_drift: After ``total_drift_after`` requests, the endpoint serves total + this many
            records (negative shrinks), so a reader sees ``total`` change mid-read.
        total_drift_after: Number of requests served before the drift starts.
        total_drift_every: When > 0, the drift grows by another ``total_drift`` every this many
            requests after it starts, so ``total`` never settles (a re-read drifts again).
    """

    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 503)
    fail_first_n: int = 0
    rate_limit_first_n: int = 0
    rate_limit_per_s: float = 0.0
    retry_after_s: int = 1
    latency_ms: float = 0.0
    slow_pages: dict[int, float] = field(default_factory=dict)
    malformed_records: list[tuple[int, int, str]] = field(default_factory=list)
    malformed_pages: list[int] = field(default_factory=list)
    truncated_pages: list[int] = field(default_factory=list)
    total_drift: int = 0
    total_drift_after: int = 0
    total_drift_every: int = 0

    def __post_init__(self) -> None:
        # JSON (admin route, CLI) gives string keys and lists; normalise to the declared types.
        self.error_statuses = tuple(int(s) for s in self.error_statuses)
        self.slow_pages = {int(k): float(v) for k, v in dict(self.slow_pages).items()}
        self.malformed_records = [(int(p), int(i), str(k)) for p, i, k in self.malformed_records]
        self.malformed_pages = [int(p) for p in self.malformed_pages]
        self.truncated_pages = [int(p) for p in self.truncated_pages]
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if self.total_drift_every < 0:
            raise ValueError("total_drift_every must be >= 0")
        if not self.error_statuses:
            raise ValueError("error_statuses must not be empty")
        for _, _, kind in self.malformed_records:
            if kind not in ("wrong_type", "missing_field"):
                raise ValueError(f"unknown malformed record kind {kind!r}")

    def is_active(self) -> bool:
        return self != FaultConfig()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


FAULT_FIELDS = frozenset(f.name for f in dataclasses.fields(FaultConfig))
DATA_FIELDS = frozenset(f.name for f in dataclasses.fields(DataConfig))


@dataclass
class StandInConfig:
    """Everything a running stand-in needs: its data, global faults and per-endpoint faults.

    An endpoint listed in ``endpoint_faults`` uses that configuration instead of ``faults``.
    """

    data: DataConfig = field(default_factory=DataConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    endpoint_faults: dict[str, FaultConfig] = field(default_factory=dict)

    def faults_for(self, endpoint: str) -> FaultConfig:
        return self.endpoint_faults.get(endpoint, self.faults)

    @classmethod
    def build(cls, **kwargs: Any) -> StandInConfig:
        """Build from flat keyword arguments: DataConfig fields, FaultConfig fields (global) and
        ``endpoint_faults={"users": {...}}``."""
        endpoint_faults = kwargs.pop("endpoint_faults", None) or {}
        unknown = set(kwargs) - DATA_FIELDS - FAULT_FIELDS
        if unknown:
            raise TypeError(f"unknown stand-in settings: {sorted(unknown)}")
        data = DataConfig(**{k: v for k, v in kwargs.items() if k in DATA_FIELDS})
        faults = FaultConfig(**{k: v for k, v in kwargs.items() if k in FAULT_FIELDS})
        per_endpoint = {}
        for endpoint, spec in endpoint_faults.items():
            if endpoint not in ENDPOINTS:
                raise ValueError(f"unknown endpoint {endpoint!r}")
            per_endpoint[endpoint] = spec if isinstance(spec, FaultConfig) else FaultConfig(**spec)
        return cls(data=data, faults=faults, endpoint_faults=per_endpoint)
