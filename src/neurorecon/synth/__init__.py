"""Synthetic data: images rendered from real shapes, for training and testing."""
