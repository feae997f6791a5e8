"""Embedding backends: one small interface (`base.EmbeddingBackend`), one implementation each."""
