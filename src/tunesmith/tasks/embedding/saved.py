"""The run's model/ as a sentence-transformers folder: the encoder's weights and tokenizer at the root, and
modules.json declaring Transformer → mean Pooling → Normalize (what tunesmith computes), written by
sentence-transformers itself, so SentenceTransformer("RUN/model") loads it as it loads all-MiniLM."""
from __future__ import annotations

import torch


class SentenceTransformerFolder(torch.nn.Module):
    """The trained encoder, whose save_pretrained writes a sentence-transformers folder (pipeline's save)."""

    def __init__(self, encoder, tok, max_length: int):
        super().__init__()
        self.encoder, self.tok, self.max_length = encoder, tok, max_length

    @property
    def config(self):
        return self.encoder.config

    def forward(self, **inputs):
        return self.encoder(**inputs)

    def save_pretrained(self, path) -> None:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling

        self.tok.model_max_length = self.max_length  # sentence-transformers reads its max_seq_length here
        self.encoder.save_pretrained(path)
        self.tok.save_pretrained(path)
        t = Transformer(str(path), max_seq_length=self.max_length)
        st = SentenceTransformer(modules=[t, Pooling(t.get_embedding_dimension(), "mean"), Normalize()], device="cpu")
        st.save(str(path), create_model_card=False)
