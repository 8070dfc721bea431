"""A small CNN for scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

from torch import Tensor, nn


class DigitsCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build() -> DigitsCNN:
    """Factory for state_dict sources (`examples.digits.model:build`)."""
    return DigitsCNN()
