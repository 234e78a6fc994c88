"""Kubernetes side of core2: Seldon's CRDs (and, later, the operator that reconciles them)."""
