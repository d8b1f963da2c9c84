"""Cleaning text: decoding, repair, tidying and PII replacement."""
