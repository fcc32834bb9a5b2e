"""The offline store (Parquet) and point-in-time training sets built from it."""
