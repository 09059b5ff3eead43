"""Encoders for modiff: pixel space and a trainable KL autoencoder."""
