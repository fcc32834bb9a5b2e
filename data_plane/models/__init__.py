"""Model versions served by the data plane: what to load (spec), how (manager), warm-up."""
