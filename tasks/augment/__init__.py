"""Stretching scarce data: selection, generation backends and the vetting of rewrites."""
