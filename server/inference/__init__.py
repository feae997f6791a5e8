"""Inference for one model version: tokenizing, micro-batching, backends, index, ranking."""
