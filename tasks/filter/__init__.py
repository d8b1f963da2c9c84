"""Keeping what is worth training on: language ID, writing systems, and quality signals,
rules and classifier."""
