"""Removing duplicates: exact hashes, MinHash signatures, LSH buckets and clusters."""
