"""Per-sample verdicts of the classifier on generated images (the rows of samples.json)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from models.classifier import LoadedClassifier

__all__ = ["ClassifierOutputs", "SampleScore", "classifier_outputs", "score_samples"]


@dataclass(frozen=True)
class ClassifierOutputs:
    logits: torch.Tensor  # (n, K)
    probabilities: torch.Tensor  # (n, K)
    features: torch.Tensor  # (n, d): input of the last linear layer, else the logits


def classifier_outputs(
    classifier: LoadedClassifier, images: torch.Tensor, batch_size: int = 500
) -> ClassifierOutputs:
    """Logits, softmax and features of [0, 1] images (n, C, H, W), in batches, on CPU."""
    logits, features = [], []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out, feat = classifier.forward_with_features(chunk.to(classifier.device).float())
            logits.append(out.float().cpu())
            features.append(feat.float().cpu())
    if not logits:
        k = classifier.num_classes
        return ClassifierOutputs(torch.empty(0, k), torch.empty(0, k), torch.empty(0, 0))
    all_logits = torch.cat(logits)
    return ClassifierOutputs(all_logits, F.softmax(all_logits, dim=1), torch.cat(features))


@dataclass(frozen=True)
class SampleScore:
    index: int
    target: int
    predicted: int
    confidence: float  # p_target
    top_k: list[tuple[int, float]]  # (class, probability), most probable first

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        def name(k: int) -> str:
            return class_names[k] if class_names is not None else str(k)

        return {
            "index": self.index,
            "target": self.target,
            "target_name": name(self.target),
            "predicted": self.predicted,
            "predicted_name": name(self.predicted),
            "confidence": self.confidence,
            "top_k": [{"class": k, "name": name(k), "probability": p} for k, p in self.top_k],
        }


def score_samples(
    classifier: LoadedClassifier,
    images: torch.Tensor,
    targets: torch.Tensor | Sequence[int],
    top_k: int = 5,
    outputs: ClassifierOutputs | None = None,
) -> list[SampleScore]:
    """One record per image: target, argmax, p_target and the top-k (class, probability)."""
    target_t = torch.as_tensor(targets).long().flatten().cpu()
    outputs = outputs if outputs is not None else classifier_outputs(classifier, images)
    probs = outputs.probabilities
    k = min(top_k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    confidence = probs.gather(1, target_t[:, None]).squeeze(1)
    predicted = probs.argmax(dim=1)
    return [
        SampleScore(
            index=i,
            target=int(target_t[i]),
            predicted=int(predicted[i]),
            confidence=float(confidence[i]),
            top_k=[(int(c), float(p)) for c, p in zip(top_i[i], top_p[i], strict=True)],
        )
        for i in range(len(target_t))
    ]
