"""Entry points run by Kubernetes Jobs over the Bento image (batch prediction, retraining)."""
