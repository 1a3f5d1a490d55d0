"""The monitoring room: what a model is served, recorded and compared with its training rows."""
