"""word2vec text embeddings for modiff, trained with gensim or loaded from disk."""
