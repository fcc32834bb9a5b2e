"""Pure numeric kernels (numpy / numba / scipy): no I/O and no imports from the rest of Aether."""
