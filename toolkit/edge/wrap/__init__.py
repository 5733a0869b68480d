"""Wrapping foreign classifiers."""
