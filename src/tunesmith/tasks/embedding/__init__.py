"""Sentence embeddings: an encoder fine-tuned so related texts get close vectors (retrieval, similarity)."""
from tunesmith.tasks.embedding.task import Embedding

__all__ = ["Embedding"]
