"""CLIP text embeddings for modiff: trained offline or loaded from a local folder."""
