"""Batch prediction: one shard of an input, scored and published exactly once (`shard`), read
from and written to files on any fsspec filesystem (`files`)."""
