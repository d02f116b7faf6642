"""Probes of a trained autoencoder's latent space."""
