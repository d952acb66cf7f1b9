"""Offline training: features, estimators, backtests, bundles and the model registry."""
