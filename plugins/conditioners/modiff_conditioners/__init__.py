"""Conditioners for modiff: cross-attention, concatenation, vector, hybrid, none."""
