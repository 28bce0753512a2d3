"""Object-level accuracy: how many predicted objects match a reference one.

The usual instance-segmentation score (the 2018 Data Science Bowl,
StarDist, cellpose): a predicted and a reference object match when their
intersection over union is at least a threshold (0.5 by default, where a
match is necessarily one-to-one); precision = matches / predicted, recall =
matches / reference, F1 their harmonic mean, and the mean IoU of the
matched pairs says how well the matched outlines agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Matching:
    threshold: float
    predicted: int
    reference: int
    matched: int
    mean_iou: float  # over matched pairs (NaN without matches)

    @property
    def precision(self) -> float:
        return self.matched / self.predicted if self.predicted else float('nan')

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else float('nan')

    @property
    def f1(self) -> float:
        total = self.predicted + self.reference
        return 2 * self.matched / total if total else float('nan')


def match_objects(
    predicted: np.ndarray, reference: np.ndarray, threshold: float = 0.5
) -> Matching:
    """Match two instance label maps of one shape (0 = background).

    Pairs are taken greedily by decreasing IoU, each object at most once
    (at ``threshold >= 0.5`` that is the only possible matching).
    """
    predicted = np.asarray(predicted)
    reference = np.asarray(reference)
    if predicted.shape != reference.shape:
        raise ValueError(
            f'cannot match objects of shape {predicted.shape} with {reference.shape}'
        )
    if not 0 < threshold <= 1:
        raise ValueError(f'the IoU threshold must be in (0, 1], got {threshold}')
    p_ids, p_sizes = np.unique(predicted[predicted > 0], return_counts=True)
    r_ids, r_sizes = np.unique(reference[reference > 0], return_counts=True)
    both = (predicted > 0) & (reference > 0)
    pairs, overlap = np.unique(
        np.stack([predicted[both], reference[both]]), axis=1, return_counts=True
    )
    p_index = np.searchsorted(p_ids, pairs[0])
    r_index = np.searchsorted(r_ids, pairs[1])
    union = p_sizes[p_index] + r_sizes[r_index] - overlap
    iou = overlap / union
    order = np.argsort(-iou, kind='stable')
    used_p: set[int] = set()
    used_r: set[int] = set()
    matched_iou = []
    for k in order:
        if iou[k] < threshold:
            break
        if p_index[k] in used_p or r_index[k] in used_r:
            continue
        used_p.add(p_index[k])
        used_r.add(r_index[k])
        matched_iou.append(iou[k])
    return Matching(
        threshold=float(threshold),
        predicted=len(p_ids),
        reference=len(r_ids),
        matched=len(matched_iou),
        mean_iou=float(np.mean(matched_iou)) if matched_iou else float('nan'),
    )
