"""Names shared across the platform: groups, PostgreSQL schemas, endpoints."""

from typing import Final

# Asset groups (the UI's lanes) and the PostgreSQL schema each layer lands in (= asset key prefix).
INGESTION_GROUP: Final = "ingestion"
CORE_GROUP: Final = "core"
RECOMMENDATION_GROUP: Final = "recommendation"

RAW_SCHEMA: Final = "raw"
CORE_SCHEMA: Final = "core"
ML_SCHEMA: Final = "ml"

# The three endpoints of the MooVitamix API (see the API contract).
USERS_ENDPOINT: Final = "users"
TRACKS_ENDPOINT: Final = "tracks"
LISTEN_HISTORY_ENDPOINT: Final = "listen_history"
ENDPOINTS: Final = (USERS_ENDPOINT, TRACKS_ENDPOINT, LISTEN_HISTORY_ENDPOINT)

# Column that carries the daily partition key in every raw table.
SNAPSHOT_DATE_COLUMN: Final = "snapshot_date"

# The contract caps a page at 100 records.
API_MAX_PAGE_SIZE: Final = 100
