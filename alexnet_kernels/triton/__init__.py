"""Triton kernels (one module per op); see the backends documentation."""
