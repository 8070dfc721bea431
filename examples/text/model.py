"""A small BERT-style transformer encoder classifier.

Written with explicit q/k/v projections and scaled_dot_product_attention (as
Hugging Face encoders are) rather than nn.TransformerEncoderLayer: the latter's
fused eval fast path cannot be traced into a TorchScript file that either ONNX
exporter accepts in torch 2.13, and this form exports through both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Config:
    vocab: int = 32
    seq_len: int = 64
    hidden: int = 256
    heads: int = 4
    ffn: int = 1024
    layers: int = 4
    classes: int = 4


class Block(nn.Module):
    """Post-LN encoder block (BERT layout)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.q = nn.Linear(cfg.hidden, cfg.hidden)
        self.k = nn.Linear(cfg.hidden, cfg.hidden)
        self.v = nn.Linear(cfg.hidden, cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.norm1 = nn.LayerNorm(cfg.hidden)
        self.fc1 = nn.Linear(cfg.hidden, cfg.ffn)
        self.fc2 = nn.Linear(cfg.ffn, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden)

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape

        def split(x: Tensor) -> Tensor:
            return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        h = self.norm1(h + self.proj(att.transpose(1, 2).reshape(b, t, d)))
        return self.norm2(h + self.fc2(F.gelu(self.fc1(h))))


class TextEncoder(nn.Module):
    def __init__(self, cfg: Config = Config()) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        self.pos = nn.Parameter(torch.zeros(1, cfg.seq_len, cfg.hidden))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.hidden, cfg.classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


def build() -> TextEncoder:
    """Factory for state_dict sources (`examples.text.model:build`)."""
    return TextEncoder()
