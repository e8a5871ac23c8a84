"""Serving a trained ranking model: vocabularies, requests, unsharded loading and quantized tables."""
