"""The FastAPI application: the contract's three endpoints plus hidden admin routes for tests."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import math
import random
import threading
import time
from collections import defaultdict
from typing import Annotated, Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from moovitamix_api.config import ENDPOINTS, FaultConfig, StandInConfig
from moovitamix_api.data import Dataset


class Track(BaseModel):
    id: int
    name: str
    artist: str
    songwriters: str
    duration: str
    genres: str
    album: str
    created_at: str
    updated_at: str


class User(BaseModel):
    id: int
    first_name: str
    last_name: str
    email: str
    gender: str
    favorite_genres: str
    created_at: str
    updated_at: str


class ListenHistory(BaseModel):
    user_id: int | None
    items: list[int] | None
    created_at: str
    updated_at: str


class TrackPage(BaseModel):
    items: list[Track]
    total: int
    page: int
    size: int
    pages: int


class UserPage(BaseModel):
    items: list[User]
    total: int
    page: int
    size: int
    pages: int


class ListenHistoryPage(BaseModel):
    items: list[ListenHistory]
    total: int
    page: int
    size: int
    pages: int


def _dumps(body: Any) -> bytes:
    # FastAPI's JSONResponse separators: bodies byte-compatible with the real service.
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class _EndpointFaultState:
    """Counters and RNG of one endpoint's faults; reset whenever faults are reconfigured."""

    def __init__(self, seed: int, endpoint: str) -> None:
        self.requests = 0
        self.rng = random.Random(f"{seed}:{endpoint}:faults")
        self.tokens: float | None = None
        self.last_refill = time.monotonic()


class StandInState:
    """Mutable state shared by the app and whoever runs it (tests mutate ``config`` directly)."""

    def __init__(self, config: StandInConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._dataset: Dataset | None = None
        self._fault_state: dict[str, _EndpointFaultState] = {}
        self._fault_key: dict[str, FaultConfig] = {}
        self.reset_stats()

    # Data --------------------------------------------------------------------------------------
    def dataset(self) -> Dataset:
        data = self.config.data
        dataset = self._dataset
        if dataset is None or dataset.config != data:
            dataset = self._dataset = Dataset(data)
        return dataset

    # Faults ------------------------------------------------------------------------------------
    def set_faults(self, faults: FaultConfig | None = None, endpoint: str | None = None) -> None:
        """Replace the global faults (or one endpoint's, ``None`` = back to global) and reset
        the fault counters."""
        with self._lock:
            if endpoint is None:
                self.config.faults = faults or FaultConfig()
            elif faults is None:
                self.config.endpoint_faults.pop(endpoint, None)
            else:
                self.config.endpoint_faults[endpoint] = faults
            self._fault_state.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self.config.faults = FaultConfig()
            self.config.endpoint_faults.clear()
            self._fault_state.clear()

    def fault_state(self, endpoint: str, faults: FaultConfig) -> _EndpointFaultState:
        state = self._fault_state.get(endpoint)
        # Mutating the config object in place (tests do) also restarts the counters.
        if state is None or self._fault_key.get(endpoint) != faults:
            state = _EndpointFaultState(self.config.data.seed, endpoint)
            self._fault_state[endpoint] = state
            self._fault_key[endpoint] = copy.deepcopy(faults)
        return state

    # Stats -------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.stats: dict[str, dict[str, Any]] = {
            e: {"requests": 0, "pages": defaultdict(int), "statuses": defaultdict(int)}
            for e in ENDPOINTS
        }

    def stats_json(self) -> dict[str, Any]:
        return {
            e: {
                "requests": s["requests"],
                "pages": {str(k): v for k, v in sorted(s["pages"].items())},
                "statuses": {str(k): v for k, v in sorted(s["statuses"].items())},
            }
            for e, s in self.stats.items()
        }


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps({"detail": detail}), status, headers, media_type="application/json")


async def _serve(state: StandInState, endpoint: str, page: int, size: int) -> Response:
    faults = state.config.faults_for(endpoint)
    fstate = state.fault_state(endpoint, faults)
    fstate.requests += 1
    n = fstate.requests
    stats = state.stats[endpoint]
    stats["requests"] += 1
    stats["pages"][page] += 1
    response = await _answer(state, endpoint, page, size, faults, fstate, n)
    stats["statuses"][response.status_code] += 1
    return response


async def _answer(
    state: StandInState,
    endpoint: str,
    page: int,
    size: int,
    faults: FaultConfig,
    fstate: _EndpointFaultState,
    n: int,
) -> Response:
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if page in faults.slow_pages:
        await asyncio.sleep(faults.slow_pages[page])
    statuses = faults.error_statuses
    if n <= faults.fail_first_n:
        return _error(statuses[(n - 1) % len(statuses)], "injected failure")
    if n <= faults.fail_first_n + faults.rate_limit_first_n:
        return _error(429, "rate limited", {"Retry-After": str(faults.retry_after_s)})
    if faults.rate_limit_per_s > 0:
        now = time.monotonic()
        burst = max(1.0, faults.rate_limit_per_s)
        tokens = burst if fstate.tokens is None else fstate.tokens
        tokens = min(burst, tokens + (now - fstate.last_refill) * faults.rate_limit_per_s)
        fstate.last_refill = now
        if tokens < 1.0:
            fstate.tokens = tokens
            return _error(429, "rate limited", {"Retry-After": str(faults.retry_after_s)})
        fstate.tokens = tokens - 1.0
    if faults.error_rate and fstate.rng.random() < faults.error_rate:
        return _error(fstate.rng.choice(statuses), "injected random failure")

    extra = 0
    if faults.total_drift and n > faults.total_drift_after:
        steps = 1
        if faults.total_drift_every > 0:
            steps += (n - faults.total_drift_after - 1) // faults.total_drift_every
        extra = faults.total_drift * steps
    items, total = state.dataset().page(endpoint, page, size, extra=extra)
    for p, index, kind in faults.malformed_records:
        if p == page and 0 <= index < len(items):
            items[index] = _malform(endpoint, items[index], kind)
    pages = math.ceil(total / size)
    if page in faults.malformed_pages:
        body = {"data": items, "count": total, "page": page}
    else:
        body = {"items": items, "total": total, "page": page, "size": size, "pages": pages}
    content = _dumps(body)
    if page in faults.truncated_pages:
        content = content[: len(content) // 2]
    return Response(content, 200, media_type="application/json")


def _malform(endpoint: str, item: dict[str, Any], kind: str) -> dict[str, Any]:
    item = dict(item)
    key = "user_id" if endpoint == "listen_history" else "id"
    if kind == "wrong_type":
        item[key] = "abc"
    else:
        del item[key]
    return item


PageNumber = Annotated[int, Query(ge=1, description="Page number")]
PageSize = Annotated[int, Query(ge=1, le=100, description="Page size")]


def create_app(state: StandInState) -> FastAPI:
    """Build the app serving ``state`` (its config may be changed while the app runs)."""
    app = FastAPI(title="MooVitamix API", version="0.1.0")
    app.state.standin = state

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=307)

    @app.get("/tracks", response_model=TrackPage, tags=["tracks"])
    async def get_tracks(page: PageNumber = 1, size: PageSize = 100) -> Response:
        return await _serve(state, "tracks", page, size)

    @app.get("/users", response_model=UserPage, tags=["users"])
    async def get_users(page: PageNumber = 1, size: PageSize = 100) -> Response:
        return await _serve(state, "users", page, size)

    @app.get("/listen_history", response_model=ListenHistoryPage, tags=["listen_history"])
    async def get_listen_history(page: PageNumber = 1, size: PageSize = 100) -> Response:
        return await _serve(state, "listen_history", page, size)

    # Admin routes: hidden from the schema, so clients built from /openapi.json never see them.
    @app.get("/_standin/config", include_in_schema=False)
    async def get_config() -> dict[str, Any]:
        data = dataclasses.asdict(state.config.data)
        data["day"] = state.config.data.served_day().isoformat()
        return {
            "data": data,
            "faults": state.config.faults.to_dict(),
            "endpoint_faults": {e: f.to_dict() for e, f in state.config.endpoint_faults.items()},
        }

    @app.post("/_standin/faults", include_in_schema=False)
    async def post_faults(spec: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Replace the faults of ``spec["endpoint"]`` (absent/null = global) with the other keys;
        ``{"clear": true}`` removes every fault."""
        spec = dict(spec)
        if spec.pop("clear", False):
            state.clear_faults()
            return await get_config()
        endpoint = spec.pop("endpoint", None)
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise HTTPException(400, f"unknown endpoint {endpoint!r}")
        try:
            faults = FaultConfig(**spec)
        except (TypeError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        state.set_faults(faults, endpoint)
        return await get_config()

    @app.post("/_standin/day", include_in_schema=False)
    async def post_day(spec: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        """Serve another day: ``{"day": "2026-04-10"}`` (null = today's UTC date)."""
        try:
            state.config.data = dataclasses.replace(state.config.data, day=spec.get("day"))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        return await get_config()

    @app.get("/_standin/stats", include_in_schema=False)
    async def get_stats() -> dict[str, Any]:
        return state.stats_json()

    @app.post("/_standin/stats/reset", include_in_schema=False)
    async def reset_stats() -> dict[str, Any]:
        state.reset_stats()
        return state.stats_json()

    return app
