"""Ingestion: the MooVitamix API client, the raw snapshot assets and their audits and checks."""
