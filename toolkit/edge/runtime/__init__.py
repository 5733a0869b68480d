"""Opening and running models."""
