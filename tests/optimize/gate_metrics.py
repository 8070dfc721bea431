"""Recipe metrics (`gate.metric: tests.optimize.gate_metrics:NAME`) as a user would write them: called with
the source's and the candidate's outputs by name (and the labels, or None), returning named figures."""

from __future__ import annotations

from typing import Any

import numpy as np

FACE_THRESHOLD = 0.7  # MTCNN's default for its last stage (ONet)


def face_boxes(source: dict[str, np.ndarray], candidate: dict[str, np.ndarray], labels: Any) -> dict[str, float]:
    """What a user of MTCNN's ONet checks: the boxes it regresses (offsets on a unit crop) overlap the source's,
    and every face decision at MTCNN's threshold stays the same."""
    boxes, scores = source["output_0"], source["output_2"]  # output_1: the landmarks
    c_boxes, c_scores = candidate["output_0"], candidate["output_2"]
    iou = _iou(_unit_crop_boxes(boxes), _unit_crop_boxes(c_boxes))
    same = (scores[:, 1] > FACE_THRESHOLD) == (c_scores[:, 1] > FACE_THRESHOLD)
    return {"mean_iou": float(iou.mean()), "worst_iou": float(iou.min()), "face_decisions_kept": float(same.mean())}


def _unit_crop_boxes(offsets: np.ndarray) -> np.ndarray:
    return np.stack([offsets[:, 0], offsets[:, 1], 1 + offsets[:, 2], 1 + offsets[:, 3]], axis=1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    height = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = width * height
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area - inter, 1e-12)


def max_abs_difference(source: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                       labels: Any) -> dict[str, float]:  # fmt: skip
    return {"max_abs": max(float(np.abs(source[k] - candidate[k]).max()) for k in source)}


def raises(source: Any, candidate: Any, labels: Any) -> dict[str, float]:
    raise KeyError("output_7")


def not_a_mapping(source: Any, candidate: Any, labels: Any) -> list[float]:
    return [0.5]


NOT_CALLABLE = 3
