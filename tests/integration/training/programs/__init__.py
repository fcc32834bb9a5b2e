"""Small real job programs the training tests run as entrypoints (through the Jobs service, torchrun)."""
