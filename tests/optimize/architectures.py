"""Architectures users bring, small and quick to build: Hugging Face encoders (BERT, DistilBERT,
RoBERTa) from their transformers configs wrapped as sentence embedders, a GRU tagger with a
time-major output, and a ResNet-style CNN with BatchNorm. Encoders and the GRU keep random weights
(the pipeline's behaviour depends on the graph, not on what was learnt); the CNN is trained for a
few steps so that its labels mean something and its BatchNorm statistics are real ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from examples.minilm.model import SentenceEmbedder

VOCAB, HIDDEN, LAYERS, HEADS, FFN, MAX_POSITIONS = 8000, 128, 2, 4, 512, 128
SEQ_LEN = 32
# Ten times the transformers default: with 0.02 a random encoder's attention is almost uniform and its
# residual stream dominates, so it barely notices the padding mask (dropping the mask moved the
# pooled embedding by a cosine of 0.0002); at this scale it moves by several hundredths, as in a
# trained model, and a lost mask fails the fidelity checks.
INIT_RANGE = 0.2


@dataclass(frozen=True)
class Tokens:
    """The special token ids of a vocabulary: what padded token data must look like for it."""

    pad: int
    start: int  # [CLS] / <s>
    end: int  # [SEP] / </s>
    first_word: int  # ids below this are special tokens


BERT_TOKENS = Tokens(pad=0, start=101, end=102, first_word=1000)
ROBERTA_TOKENS = Tokens(pad=1, start=0, end=2, first_word=4)


def bert() -> SentenceEmbedder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, pad_token_id=BERT_TOKENS.pad,
                     initializer_range=INIT_RANGE)  # fmt: skip
    return SentenceEmbedder(BertModel(cfg, add_pooling_layer=False)).eval()


def bert_model() -> nn.Module:
    """A plain transformers BertModel, pooler included, as users load it: its forward takes optional
    token_type_ids, position_ids, ... after input_ids and attention_mask, and it returns a ModelOutput
    of two tensors (last_hidden_state [batch, T, H], pooler_output [batch, H])."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS, pad_token_id=BERT_TOKENS.pad,
                     initializer_range=INIT_RANGE)  # fmt: skip
    return BertModel(cfg).eval()


def distilbert() -> SentenceEmbedder:
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
                           max_position_embeddings=MAX_POSITIONS, pad_token_id=BERT_TOKENS.pad,
                           initializer_range=INIT_RANGE)  # fmt: skip
    return SentenceEmbedder(DistilBertModel(cfg)).eval()


def roberta() -> SentenceEmbedder:
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    # RoBERTa numbers positions from pad + 1, so it needs two more position rows than tokens.
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1,
                        pad_token_id=ROBERTA_TOKENS.pad, bos_token_id=ROBERTA_TOKENS.start,
                        eos_token_id=ROBERTA_TOKENS.end, initializer_range=INIT_RANGE)  # fmt: skip
    return SentenceEmbedder(RobertaModel(cfg, add_pooling_layer=False)).eval()


ENCODERS: dict[str, tuple[Callable[[], SentenceEmbedder], Tokens]] = {
    "bert": (bert, BERT_TOKENS),
    "distilbert": (distilbert, BERT_TOKENS),
    "roberta": (roberta, ROBERTA_TOKENS),
}


def token_data(n: int, seed: int, tokens: Tokens, seq_len: int = SEQ_LEN, vocab: int = VOCAB) -> dict[str, np.ndarray]:
    """Padded batches as a tokenizer makes them: start, words, end, then padding; lengths vary from
    4 tokens to the full length so that masking matters."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, seq_len), tokens.pad, dtype=np.int64)
    mask = np.zeros((n, seq_len), dtype=np.int64)
    for i, length in enumerate(rng.integers(4, seq_len + 1, size=n)):
        ids[i, :length] = [tokens.start, *rng.integers(tokens.first_word, vocab, size=length - 2), tokens.end]
        mask[i, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


# Few steps: the exporter traces the recurrence step by step, so its time grows with T.
SEQ_FEATURES, SEQ_STEPS, SEQ_CLASSES = 16, 10, 8


class TimeMajorGRUTagger(nn.Module):
    """A speech/OCR-style tagger: 2-layer BiGRU over [batch, T, F], per-step class scores time-major
    [T, batch, C] (the layout CTC losses take)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(SEQ_FEATURES, 48, num_layers=2, bidirectional=True)
        self.head = nn.Linear(96, SEQ_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        steps, _ = self.rnn(x.transpose(0, 1))
        return self.head(steps)


def gru_tagger() -> TimeMajorGRUTagger:
    torch.manual_seed(0)
    return TimeMajorGRUTagger().eval()


def sequence_data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, SEQ_STEPS, SEQ_FEATURES)).astype(np.float32)


IMAGE, IMAGE_CLASSES = 16, 4


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity (or a strided 1x1 conv-BN where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(Residual(16, 16, 1), Residual(16, 32, 2), Residual(32, 64, 2))
        self.head = nn.Linear(64, IMAGE_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def image_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy RGB images; the label is the quadrant holding a bright blob (of a random colour)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.4, (n, 3, IMAGE, IMAGE)).astype(np.float32)
    y = rng.integers(0, IMAGE_CLASSES, n)
    half = IMAGE // 2
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, rng.integers(0, 3), r * half : (r + 1) * half, col * half : (col + 1) * half] += 0.6
    return x, y.astype(np.int64)


def trained_resnet() -> SmallResNet:
    """A few Adam steps: enough for the quadrant task, and BatchNorm running stats from real batches."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches this small gain nothing from more, and idle threads spin on a busy CPU
    model = SmallResNet()
    x, y = image_data(512, seed=0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    torch.set_num_threads(threads)
    return model.eval()


def save_pt2(model: nn.Module, example: dict[str, np.ndarray], path: Path) -> Path:
    """torch.export program with a dynamic batch dimension on every input (the order of `example`)."""
    args = tuple(torch.from_numpy(v[:2]) for v in example.values())
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, args, dynamic_shapes=tuple({0: batch} for _ in args))
    torch.export.save(program, str(path))
    return path


def save_npz(path: Path, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None) -> Path:
    """One array per model input name (optimize.data's format), labels under y."""
    arrays = dict(inputs) if labels is None else {**inputs, "y": labels}
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def run_torch(model: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(v) for v in inputs.values())).numpy()
