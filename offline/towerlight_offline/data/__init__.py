"""Data: loading (MovieLens, CSV/Parquet, Postgres), synthetic generation, and the in-memory Dataset."""
