"""Ingestion and the embedded store (DuckDB + Parquet). Lowest layer: imports only shared modules."""
