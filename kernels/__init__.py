"""Python binding of the bit-packed XNOR-popcount kernels (C sources in kernels/src)."""
