"""Analysis: stream tensor pairs through the kernels, tabulate, fit statistics."""
