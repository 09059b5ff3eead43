"""Datasets for modiff: the procedural shapes world and image folders, with evaluators."""
