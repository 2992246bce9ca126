"""Deterministic, day-evolving MooVitamix data, generated page by page (never up front).

Model (all of it arithmetic on seeded hashes, so a page costs O(page size)):

* An endpoint of N records has N *slots*. A slot holds one entity at a time and replaces it every
  ``L = round(1 / churn)`` days, on a day given by a seeded per-slot phase: every day about N / L
  entities disappear and as many new ones (new ids) appear, so ``total`` is exactly N every day.
  Entity ``key = generation * N + slot`` is mapped to its id by a seeded bijection of a larger
  power-of-two id space, so ids look random, never repeat and stay with their entity.
* An entity is modified every ``round(1 / change_rate)`` days (seeded phase); each modification
  rewrites one mutable field (round-robin) and moves ``updated_at`` to that day.
* Listings show slots in a seeded affine order, stable for a day.
* A track's genre is ``GENRES[slot % 17]``, so the tracks of a genre are enumerable arithmetically.
  A user's history is a fixed infinite stream of listens truncated to a length that grows with the
  user's age: day d's list extends day d-1's. The listened id is the id of the track occupying the
  drawn slot on the day of the listen (later removals make orphans).
* Taste. Every user has a *listening genre* (seeded, weighted by ``GENRE_WEIGHTS``) and a *scene*
  in it, one of ``taste_scenes`` listening communities: each scene ranks the genre's tracks from
  its own starting point, so its users share favourite tracks that another scene's users rarely
  play. Each listen is, with ``favourite_share``, a Zipf draw (``zipf_exponent``) over the user's
  scene ranking, otherwise a Zipf draw over all tracks (one global ranking).
* Declared genre. ``favorite_genres`` on /users is what the user declared on sign-up: the listening
  genre for ``declared_genre_share`` of users, another genre (uniform among the other 16) for the
  rest. ``Dataset.favourite_genre`` returns the listening genre, which no endpoint shows.
* No taste (``--taste none``: ``favourite_share=0``, ``zipf_exponent=0``): every listen is a
  uniform draw over the catalogue, so histories carry no signal a model could learn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from moovitamix_api.config import ENDPOINTS, EPOCH, DataConfig
from moovitamix_api.words import (
    EMAIL_DOMAINS,
    FIRST_NAMES,
    GENDER_WEIGHTS,
    GENDERS,
    GENRE_WEIGHTS,
    GENRES,
    LAST_NAMES,
    WORDS,
)

DAY_US = 86_400 * 1_000_000
# Ids must stay valid for any served day up to this many days after EPOCH (2020-01-01 + ~30 y).
MAX_DAY = 11_000
N_GENRES = len(GENRES)
# A prime larger than any count: multiplying ranks by it permutes every residue ring below it.
_PRIME = 2_147_483_647
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_ODD = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0xD6E8FEB86659FD93),
)
_EPOCH64 = np.datetime64(EPOCH.isoformat(), "us")

_FIRST = np.array(FIRST_NAMES, dtype=object)
_LAST = np.array(LAST_NAMES, dtype=object)
_WORDS = np.array(WORDS, dtype=object)
_GENRES = np.array(GENRES, dtype=object)
_GENDERS = np.array(GENDERS, dtype=object)
_DOMAINS = np.array(EMAIL_DOMAINS, dtype=object)
_DURATIONS = np.array([f"{x // 60:02d}:{x % 60:02d}" for x in range(3600)], dtype=object)
_GENRE_CDF = np.cumsum(GENRE_WEIGHTS) / sum(GENRE_WEIGHTS)
_GENDER_CDF = np.cumsum(GENDER_WEIGHTS) / sum(GENDER_WEIGHTS)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a fresh uint64 array, in place (wrapping arithmetic is intended)."""
    x ^= x >> np.uint64(30)
    x *= _C1
    x ^= x >> np.uint64(27)
    x *= _C2
    x ^= x >> np.uint64(31)
    return x


def _u64(values: np.ndarray | int) -> np.ndarray:
    return np.atleast_1d(np.asarray(values, dtype=np.int64)).view(np.uint64)


def _hash(salt: np.uint64, *parts: np.ndarray | int) -> np.ndarray:
    """One splitmix64 step over salt + sum(part_i * odd_i): cheap, and ample for fake data."""
    h = _u64(parts[0]) * _ODD[0]
    for i, part in enumerate(parts[1:], start=1):
        h = h + _u64(part) * _ODD[i]
    h += salt
    return _mix(h)


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform floats in [0, 1) from hashes."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _pick(h: np.ndarray, n: int) -> np.ndarray:
    return (h % np.uint64(n)).astype(np.int64)


def _cycled(h: np.ndarray, versions: np.ndarray, n: int) -> np.ndarray:
    """Index into n values that changes at every version (a seeded non-zero step per entity)."""
    step = 1 + ((h >> np.uint64(32)) % np.uint64(max(n - 1, 1))).astype(np.int64)
    return (_pick(h, n) + versions * step) % n


def _salt(seed: int, purpose: str) -> np.uint64:
    digest = hashlib.blake2b(f"{seed}:{purpose}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def _timestamps(us: np.ndarray) -> list[str]:
    """ISO 8601 strings without zone, always with microseconds, like the production service."""
    return np.datetime_as_string(_EPOCH64 + us.astype("timedelta64[us]"), unit="us").tolist()


def zipf_ranks(u: np.ndarray, n: np.ndarray | int, exponent: float) -> np.ndarray:
    """Ranks in [0, n) with P(rank r) ~ (r + 1) ** -exponent, by inverting a continuous CDF."""
    n = np.asarray(n, dtype=np.float64)
    if abs(exponent - 1.0) < 1e-9:
        x = np.power(1.0 + n, u) - 1.0
    else:
        e = 1.0 - exponent
        x = np.power(1.0 + u * (np.power(1.0 + n, e) - 1.0), 1.0 / e) - 1.0
    return np.minimum(x.astype(np.int64), np.maximum(n.astype(np.int64) - 1, 0))


class _Bijection:
    """A seeded permutation of [0, 2**bits): odd multiply, xor-shift and add, three rounds."""

    def __init__(self, bits: int, seed: int, purpose: str) -> None:
        self.bits = bits
        self.mask = np.uint64((1 << bits) - 1)
        self.shift = np.uint64(max(1, bits // 2))
        self.rounds = []
        for r in range(3):
            mult = int(_salt(seed, f"{purpose}:mul:{r}")) | 1
            add = int(_salt(seed, f"{purpose}:add:{r}"))
            inverse = pow(mult, -1, 1 << 64)
            self.rounds.append((np.uint64(mult), np.uint64(add), np.uint64(inverse)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.uint64)
        for mult, add, _ in self.rounds:
            x = (x * mult) & self.mask
            x = x ^ (x >> self.shift)
            x = (x + add) & self.mask
        return x

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = y.astype(np.uint64)
        steps = -(-self.bits // int(self.shift))
        for _, add, inverse in reversed(self.rounds):
            y = (y - add) & self.mask
            x = y
            for _ in range(steps):
                x = y ^ (x >> self.shift)
            y = (x * inverse) & self.mask
        return y


@dataclass(frozen=True)
class _Occupants:
    slot: np.ndarray
    key: np.ndarray
    birth: np.ndarray  # day index (since EPOCH) the entity appeared


class _Population:
    """Slots, churn, ids and listing order of one entity kind (users or tracks)."""

    def __init__(self, seed: int, name: str, n: int, churn: float) -> None:
        self.n = n
        self.seed = seed
        self.lifetime = round(1.0 / churn) if churn > 0 else 0
        max_gen = MAX_DAY // self.lifetime + 2 if self.lifetime else 1
        # Twice the keys ever used: the upper half serves total_drift's extra slots.
        self.bits = max(14, math.ceil(math.log2(max(2, 2 * max(n, 1) * (max_gen + 1)))))
        if self.bits > 62:
            raise ValueError(f"{name}: too many records for the id space")
        self.space = 1 << self.bits
        self.ids = _Bijection(self.bits, seed, f"{name}:ids")
        self.s_phase = _salt(seed, f"{name}:phase")
        self.s_born = _salt(seed, f"{name}:born")
        # Listing order: position -> slot by an affine map coprime with n (a bijection of [0, n)).
        mult = int(_salt(seed, f"{name}:order:mul")) % max(n, 1) or 1
        while n > 1 and math.gcd(mult, n) != 1:
            mult += 1
        self.order_mul = mult
        self.order_add = int(_salt(seed, f"{name}:order:add")) % max(n, 1)
        self.order_inv = pow(mult, -1, n) if n > 1 else 1

    def slots_at(self, positions: np.ndarray) -> np.ndarray:
        inside = positions < self.n
        mapped = (positions * self.order_mul + self.order_add) % max(self.n, 1)
        return np.where(inside, mapped, positions)

    def position_of(self, slot: int) -> int:
        if slot >= self.n:
            return slot
        return (slot - self.order_add) * self.order_inv % self.n

    def occupants(self, slots: np.ndarray, day: np.ndarray | int) -> _Occupants:
        day = np.asarray(day, dtype=np.int64)
        if self.lifetime:
            phase = _pick(_hash(self.s_phase, slots), self.lifetime)
            gen = (day + phase) // self.lifetime
            birth = gen * self.lifetime - phase
        else:
            gen = np.zeros_like(slots)
            birth = -1 - _pick(_hash(self.s_born, slots), 730) + day * 0
        n = max(self.n, 1)
        extra = slots >= self.n
        key = np.where(extra, self.space - 1 - (gen * n + slots - self.n), gen * n + slots)
        return _Occupants(slots, key, birth)

    def id_of(self, key: np.ndarray) -> np.ndarray:
        return self.ids.forward(key).astype(np.int64) + 1

    def decode(self, entity_id: int) -> tuple[int, int] | None:
        """(slot, key) of an id ever issued, or None."""
        if not 1 <= entity_id <= self.space:
            return None
        key = int(self.ids.inverse(np.array([entity_id - 1], dtype=np.uint64))[0])
        n = max(self.n, 1)
        if key < self.space // 2:
            return key % n, key
        return self.n + (self.space - 1 - key) % n, key


class Dataset:
    """The stand-in's data for one DataConfig; every method is pure and cheap per record."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        seed = config.seed
        self.users = _Population(seed, "users", config.n_users, config.user_churn)
        self.tracks = _Population(seed, "tracks", config.n_tracks, config.track_churn)
        self.change_period = round(1.0 / config.change_rate) if config.change_rate > 0 else 0
        self._salts = {
            name: _salt(seed, name)
            for name in (
                "created", "updated", "cphase", "start", "first", "last", "email", "email_fmt",
                "domain", "gender", "fav", "dup", "dup_kind", "tname", "tname_len", "artist_f",
                "artist_l", "writer_f", "writer_l", "duration", "album", "rate", "offset",
                "listen", "rank", "lupdated", "null_uid", "null_items", "genre_off", "global_off",
                "scene", "declared", "declared_genre",
            )
        }  # fmt: skip
        self._genre_offsets = [int(_salt(seed, f"genre:{g}")) % 1_000_003 for g in range(N_GENRES)]
        self._global_offset = int(_salt(seed, "global")) % 1_000_003
        lifetime = self.users.lifetime or 100
        # Mean list length = rate * E[age + 1]; ages are uniform over a lifetime.
        self._listen_rate = config.mean_listens / ((lifetime + 1) / 2)
        self._max_listens = max(100, int(20 * config.mean_listens))

    # Days --------------------------------------------------------------------------------------
    def day_index(self, day: dt.date | str | None = None) -> int:
        if day is None:
            day = self.config.served_day()
        elif isinstance(day, str):
            day = dt.date.fromisoformat(day)
        index = (day - EPOCH).days
        if not 0 <= index <= MAX_DAY:
            raise ValueError(f"day {day} outside [{EPOCH}, {EPOCH + dt.timedelta(MAX_DAY)}]")
        return index

    # Pages -------------------------------------------------------------------------------------
    def total(self, endpoint: str, extra: int = 0) -> int:
        population = self.tracks if endpoint == "tracks" else self.users
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        # Drift slots use the upper half of the key space, which holds at most n of them.
        return max(0, population.n + max(-population.n, min(extra, population.n)))

    def page(
        self,
        endpoint: str,
        page: int,
        size: int,
        extra: int = 0,
        day: dt.date | str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Items of a 1-based page and the endpoint's total, as the API serves them.

        Args:
            endpoint: ``users``, ``tracks`` or ``listen_history``.
            page: 1-based page number.
            size: Page size.
            extra: Records added to (negative: removed from) the end of the listing.
            day: Served day (defaults to the configured day).

        Returns:
            The page's items (JSON-ready dicts) and the total number of records.
        """
        total = self.total(endpoint, extra)
        start = (page - 1) * size
        stop = min(start + size, total)
        if start >= stop:
            return [], total
        return self.records_at(endpoint, np.arange(start, stop, dtype=np.int64), day), total

    def records_at(
        self, endpoint: str, positions: np.ndarray, day: dt.date | str | None = None
    ) -> list[dict[str, Any]]:
        """Records at listing positions (0-based) on a day."""
        t = self.day_index(day)
        if endpoint == "users":
            return self._users(positions, t)
        if endpoint == "tracks":
            return self._tracks(positions, t)
        if endpoint == "listen_history":
            return self._histories(positions, t)
        raise ValueError(f"unknown endpoint {endpoint!r}")

    def iter_records(
        self, endpoint: str, day: dt.date | str | None = None, batch: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        """Every record of an endpoint in listing order (O(n), in batches)."""
        total = self.total(endpoint)
        for start in range(0, total, batch):
            positions = np.arange(start, min(start + batch, total), dtype=np.int64)
            yield from self.records_at(endpoint, positions, day)

    def records(self, endpoint: str, day: dt.date | str | None = None) -> list[dict[str, Any]]:
        return list(self.iter_records(endpoint, day))

    # Lookups by id -----------------------------------------------------------------------------
    def _locate(self, population: _Population, entity_id: int, t: int) -> int | None:
        decoded = population.decode(entity_id)
        if decoded is None or decoded[0] >= population.n:
            return None
        slot, key = decoded
        current = population.occupants(np.array([slot], dtype=np.int64), t).key[0]
        return population.position_of(slot) if int(current) == key else None

    def user(self, user_id: int, day: dt.date | str | None = None) -> dict[str, Any] | None:
        """The /users record of a user id on a day, or None if it does not exist that day."""
        position = self._locate(self.users, user_id, self.day_index(day))
        if position is None:
            return None
        return self.records_at("users", np.array([position], dtype=np.int64), day)[0]

    def track(self, track_id: int, day: dt.date | str | None = None) -> dict[str, Any] | None:
        """The /tracks record of a track id on a day, or None if it does not exist that day."""
        position = self._locate(self.tracks, track_id, self.day_index(day))
        if position is None:
            return None
        return self.records_at("tracks", np.array([position], dtype=np.int64), day)[0]

    def listen_history(
        self, user_id: int, day: dt.date | str | None = None
    ) -> dict[str, Any] | None:
        """The /listen_history record of a user on a day (null faults included), or None."""
        position = self._locate(self.users, user_id, self.day_index(day))
        if position is None:
            return None
        return self.records_at("listen_history", np.array([position], dtype=np.int64), day)[0]

    def user_listens(self, user_id: int, day: dt.date | str | None = None) -> list[int] | None:
        """Track ids a user listened to, oldest first (ignores the null-items fault)."""
        position = self._locate(self.users, user_id, self.day_index(day))
        if position is None:
            return None
        occ = self.users.occupants(self.users.slots_at(np.array([position])), self.day_index(day))
        ids, lengths, _ = self._listens(occ, self.day_index(day))
        return ids[: int(lengths[0])].tolist()

    def favourite_genre(self, user_id: int) -> str | None:
        """A user's listening genre (fixed for the user's lifetime), for any id ever issued.

        The genre the user's listens follow; /users shows the declared one, which differs for
        ``1 - declared_genre_share`` of users.
        """
        decoded = self.users.decode(user_id)
        if decoded is None:
            return None
        return str(_GENRES[self._favourite(np.array([decoded[1]]))[0]])

    def track_genre(self, track_id: int) -> str | None:
        """A track's genre, for any id ever issued (removed tracks included)."""
        decoded = self.tracks.decode(track_id)
        if decoded is None or decoded[0] >= self.tracks.n:
            return None
        return GENRES[decoded[0] % N_GENRES]

    def genre_track_ids(self, genre: str, day: dt.date | str | None = None) -> list[int]:
        """Current ids of a genre's tracks, most popular (within the genre) first."""
        g = GENRES.index(genre)
        n_g = self._genre_size(np.array([g]))[0]
        ranks = np.arange(n_g, dtype=np.int64)
        slots = g + N_GENRES * ((ranks * _PRIME + self._genre_offsets[g]) % max(n_g, 1))
        occ = self.tracks.occupants(slots, self.day_index(day))
        return self.tracks.id_of(occ.key).tolist() if n_g else []

    # Shared pieces -----------------------------------------------------------------------------
    def _times(self, salt: str, *parts: np.ndarray | int) -> np.ndarray:
        window = np.uint64(self.config.event_window_s * 1_000_000)
        return (_hash(self._salts[salt], *parts) % window).astype(np.int64)

    def _versions(self, key: np.ndarray, birth: np.ndarray, t: int, created: np.ndarray):
        """Modification count and updated_at (microseconds since EPOCH) of entities."""
        if not self.change_period:
            return np.zeros_like(key), created
        period = self.change_period
        phase = _pick(_hash(self._salts["cphase"], key), period)
        last_cycle = (t + phase) // period
        versions = np.maximum(last_cycle - (birth + phase) // period, 0)
        last_day = last_cycle * period - phase
        updated = last_day * DAY_US + self._times("updated", key, versions)
        return versions, np.where(versions > 0, updated, created)

    def _field_versions(self, key: np.ndarray, versions: np.ndarray, n_fields: int) -> list:
        """Per mutable field, how many modifications rewrote it (round-robin from a seeded
        start)."""
        start = _pick(_hash(self._salts["start"], key), n_fields)
        out = []
        for j in range(n_fields):
            first = (j - start) % n_fields + 1  # the modification that first rewrites field j
            out.append(np.where(versions >= first, (versions - first) // n_fields + 1, 0))
        return out

    def _favourite(self, key: np.ndarray) -> np.ndarray:
        u = _unit(_hash(self._salts["fav"], key))
        return np.minimum(np.searchsorted(_GENRE_CDF, u, side="right"), N_GENRES - 1)

    def _declared(self, key: np.ndarray) -> np.ndarray:
        """The genre a user states on sign-up: their listening genre only for some of them."""
        favourite = self._favourite(key)
        honest = _unit(_hash(self._salts["declared"], key)) < self.config.declared_genre_share
        # Another genre than the listened one, drawn uniformly among the other 16.
        other = (favourite + 1 + _pick(_hash(self._salts["declared_genre"], key), N_GENRES - 1)) % (
            N_GENRES
        )
        return np.where(honest, favourite, other)

    def _genre_size(self, genre: np.ndarray) -> np.ndarray:
        n = self.tracks.n
        return np.where(genre < n, (n - genre + N_GENRES - 1) // N_GENRES, 0)

    # Users -------------------------------------------------------------------------------------
    def _user_arrays(self, positions: np.ndarray, t: int) -> dict[str, Any]:
        s = self._salts
        occ = self.users.occupants(self.users.slots_at(positions), t)
        key = occ.key
        created = occ.birth * DAY_US + self._times("created", key)
        versions, updated = self._versions(key, occ.birth, t, created)
        # Each modification rewrites one of these (gender and favourite genre stay put).
        v_last, v_email = self._field_versions(key, versions, 2)
        first = _FIRST[_pick(_hash(s["first"], key), len(_FIRST))]
        last = _LAST[_cycled(_hash(s["last"], key), v_last, len(_LAST))]
        ids = self.users.id_of(key)
        h_email = _hash(s["email"], key, v_email)
        email_first = _FIRST[_cycled(_hash(s["email"], key), v_email, len(_FIRST))]
        email_last = _LAST[_pick(h_email >> np.uint64(20), len(_LAST))]
        fmt = _pick(_hash(s["email_fmt"], key, v_email), 3)
        domain = _DOMAINS[_pick(_hash(s["domain"], key, v_email), len(_DOMAINS))]
        emails = []
        for f, la, i, k, d in zip(
            email_first.tolist(),
            email_last.tolist(),
            ids.tolist(),
            fmt.tolist(),
            domain.tolist(),
            strict=True,
        ):
            # The id makes every address unique, the way a sign-up form would enforce it.
            local = (f"{f}{i}", f"{f}.{la}{i}", f"{f[0]}{la}{i}")[k].lower().replace(" ", "")
            emails.append(f"{local}@{d}")
        u_gender = _unit(_hash(s["gender"], key))
        gender = _GENDERS[np.minimum(np.searchsorted(_GENDER_CDF, u_gender, side="right"), 8)]
        return {
            "key": key,
            "id": ids,
            "first_name": first,
            "last_name": last,
            "email": np.array(emails, dtype=object),
            "gender": gender,
            "favorite_genres": _GENRES[self._declared(key)],
            "created": created,
            "updated": updated,
        }

    def _users(self, positions: np.ndarray, t: int) -> list[dict[str, Any]]:
        a = self._user_arrays(positions, t)
        ids, emails = a["id"], a["email"]
        if self.config.duplicate_rate > 0:
            ids, emails = self._duplicates(positions, t, a["key"], ids, emails)
        columns = zip(
            ids.tolist(),
            a["first_name"].tolist(),
            a["last_name"].tolist(),
            emails.tolist(),
            a["gender"].tolist(),
            a["favorite_genres"].tolist(),
            _timestamps(a["created"]),
            _timestamps(a["updated"]),
            strict=True,
        )
        return [
            {
                "id": i,
                "first_name": f,
                "last_name": la,
                "email": e,
                "gender": g,
                "favorite_genres": fg,
                "created_at": c,
                "updated_at": u,
            }
            for i, f, la, e, g, fg, c, u in columns
        ]

    def _duplicates(self, positions, t, key, ids, emails):
        """Give a few records their predecessor's id (or, for users, email)."""
        dup = (_unit(_hash(self._salts["dup"], key)) < self.config.duplicate_rate) & (positions > 0)
        if not dup.any():
            return ids, emails
        # Tracks have no emails: only users can share one.
        ids = ids.copy()
        emails = emails.copy() if emails is not None else None
        where = np.flatnonzero(dup)
        previous = self._user_arrays(positions[where] - 1, t) if emails is not None else None
        if previous is None:
            occ = self.tracks.occupants(self.tracks.slots_at(positions[where] - 1), t)
            ids[where] = self.tracks.id_of(occ.key)
            return ids, emails
        by_email = _pick(_hash(self._salts["dup_kind"], key[where]), 2) == 1
        ids[where[~by_email]] = previous["id"][~by_email]
        emails[where[by_email]] = previous["email"][by_email]
        return ids, emails

    # Tracks ------------------------------------------------------------------------------------
    def _tracks(self, positions: np.ndarray, t: int) -> list[dict[str, Any]]:
        s = self._salts
        occ = self.tracks.occupants(self.tracks.slots_at(positions), t)
        key = occ.key
        created = occ.birth * DAY_US + self._times("created", key)
        versions, updated = self._versions(key, occ.birth, t, created)
        v_name, v_album, v_writer, v_artist = self._field_versions(key, versions, 4)
        h_name = _hash(s["tname"], key, v_name)
        name_len = 1 + _pick(_hash(s["tname_len"], key, v_name), 3)
        w1 = _WORDS[_cycled(_hash(s["tname"], key), v_name, len(_WORDS))]
        w2 = _WORDS[_pick(h_name >> np.uint64(16), len(_WORDS))]
        w3 = _WORDS[_pick(h_name >> np.uint64(32), len(_WORDS))]
        names = [
            " ".join((a, b, c)[:n])
            for a, b, c, n in zip(
                w1.tolist(), w2.tolist(), w3.tolist(), name_len.tolist(), strict=True
            )
        ]
        artist = _FIRST[_cycled(_hash(s["artist_f"], key), v_artist, len(_FIRST))] + " "
        artist = artist + _LAST[_pick(_hash(s["artist_l"], key, v_artist), len(_LAST))]
        writer = _FIRST[_cycled(_hash(s["writer_f"], key), v_writer, len(_FIRST))] + " "
        writer = writer + _LAST[_pick(_hash(s["writer_l"], key, v_writer), len(_LAST))]
        # Durations: mostly 2-6 minutes, a long tail up to an hour (live sets, mixes).
        u = _unit(_hash(s["duration"], key))
        seconds = np.minimum(90 + (-np.log1p(-u) * 150).astype(np.int64), 3599)
        durations = _DURATIONS[seconds].tolist()
        album = _WORDS[_cycled(_hash(s["album"], key), v_album, len(_WORDS))]
        genres = _GENRES[occ.slot % N_GENRES]
        ids = self.tracks.id_of(key)
        if self.config.duplicate_rate > 0:
            ids, _ = self._duplicates(positions, t, key, ids, None)
        columns = zip(
            ids.tolist(),
            names,
            artist.tolist(),
            writer.tolist(),
            durations,
            genres.tolist(),
            album.tolist(),
            _timestamps(created),
            _timestamps(updated),
            strict=True,
        )
        return [
            {
                "id": i,
                "name": n,
                "artist": ar,
                "songwriters": w,
                "duration": d,
                "genres": g,
                "album": al,
                "created_at": c,
                "updated_at": u,
            }
            for i, n, ar, w, d, g, al, c, u in columns
        ]

    # Listen history ----------------------------------------------------------------------------
    def _listens(self, occ: _Occupants, t: int):
        """Flat listened track ids, list lengths and day of the last listen of users."""
        s = self._salts
        key = occ.key
        age = np.maximum(t - occ.birth, 0)
        rate = self._listen_rate * -np.log1p(-_unit(_hash(s["rate"], key)))
        offset = _unit(_hash(s["offset"], key))
        lengths = np.floor(rate * (age + 1) + offset).astype(np.int64)
        lengths = np.minimum(lengths, self._max_listens)
        if self.tracks.n == 0:
            lengths[:] = 0
        total = int(lengths.sum())
        owner = np.repeat(np.arange(len(key)), lengths)
        starts = np.cumsum(lengths) - lengths
        j = np.arange(total, dtype=np.int64) - starts[owner]
        # Listen j was appended on the first day its index fell under floor(rate * (age+1) + off).
        with np.errstate(divide="ignore", invalid="ignore"):
            appended = np.ceil((j + 1 - offset[owner]) / rate[owner]).astype(np.int64) - 1
        listen_day = occ.birth[owner] + np.clip(appended, 0, None)
        last_day = np.full(len(key), -1, dtype=np.int64)
        has = lengths > 0
        last_day[has] = listen_day[starts[has] + lengths[has] - 1]

        ukey = key[owner]
        favourite = self._favourite(ukey)
        n_g = self._genre_size(favourite)
        u_choice = _unit(_hash(s["listen"], ukey, j))
        u_rank = _unit(_hash(s["rank"], ukey, j))
        from_genre = (u_choice < self.config.favourite_share) & (n_g > 0)
        slots = np.empty(total, dtype=np.int64)
        if from_genre.any():
            g, n = favourite[from_genre], n_g[from_genre]
            ranks = zipf_ranks(u_rank[from_genre], n, self.config.zipf_exponent)
            offsets = np.asarray(self._genre_offsets, dtype=np.int64)[g]
            # A user's scene shifts the genre's ranking: each scene has its own favourite tracks.
            scenes = max(1, self.config.taste_scenes)
            scene = _pick(_hash(s["scene"], ukey[from_genre]), scenes)
            offsets = offsets + scene * (n // scenes)
            slots[from_genre] = g + N_GENRES * ((ranks * _PRIME + offsets) % n)
        other = ~from_genre
        if other.any():
            n_t = self.tracks.n
            ranks = zipf_ranks(u_rank[other], n_t, self.config.zipf_exponent)
            slots[other] = (ranks * _PRIME + self._global_offset) % n_t
        track_ids = self.tracks.id_of(self.tracks.occupants(slots, listen_day).key)
        return track_ids, lengths, last_day

    def _histories(self, positions: np.ndarray, t: int) -> list[dict[str, Any]]:
        s = self._salts
        occ = self.users.occupants(self.users.slots_at(positions), t)
        key = occ.key
        track_ids, lengths, last_day = self._listens(occ, t)
        created = occ.birth * DAY_US + self._times("created", key)
        updated = np.where(
            last_day > occ.birth,
            last_day * DAY_US + self._times("lupdated", key, lengths),
            created,
        )
        user_ids = self.users.id_of(key).tolist()
        null_rate = self.config.listen_null_rate
        null_uid = (_unit(_hash(s["null_uid"], key)) < null_rate).tolist()
        null_items = (_unit(_hash(s["null_items"], key)) < null_rate).tolist()
        flat = track_ids.tolist()
        ends = np.cumsum(lengths).tolist()
        out = []
        begin = 0
        for i, (c, u) in enumerate(zip(_timestamps(created), _timestamps(updated), strict=True)):
            end = ends[i]
            out.append(
                {
                    "user_id": None if null_uid[i] else user_ids[i],
                    "items": None if null_items[i] else flat[begin:end],
                    "created_at": c,
                    "updated_at": u,
                }
            )
            begin = end
        return out
