"""Sequence to sequence (translation, summarisation, rewriting): text in, text out, by an encoder-decoder."""
from tunesmith.tasks.seq2seq.task import Seq2Seq

__all__ = ["Seq2Seq"]
