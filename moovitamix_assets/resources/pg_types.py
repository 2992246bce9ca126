"""The PostgreSQL column types the IO manager writes, by the names the catalog gives them."""

from typing import Final

BIGINT: Final = "bigint"
DOUBLE: Final = "double precision"
BOOLEAN: Final = "boolean"
TIMESTAMPTZ: Final = "timestamp with time zone"
DATE: Final = "date"
TEXT: Final = "text"
BIGINT_ARRAY: Final = "bigint[]"
TEXT_ARRAY: Final = "text[]"
JSONB: Final = "jsonb"
