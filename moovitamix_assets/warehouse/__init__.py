"""The warehouse building blocks: the PostgreSQL IO manager."""
