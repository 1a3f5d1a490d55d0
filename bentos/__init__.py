"""Tabular models to production three ways: online (BentoML), batch (Kubernetes Jobs), edge (TFLite)."""
