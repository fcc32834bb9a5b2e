"""Training jobs: spec, GPU scheduler, device pool, executors, supervisor loop and the Jobs service."""
