"""The classifier's outputs on generated images, and per-sample verdicts (samples.json's rows)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from models.classifier import LoadedClassifier
from models.contracts.artifacts import SampleRecord

__all__ = ["ClassifierOutputs", "classifier_outputs", "score_samples"]


@dataclass(frozen=True)
class ClassifierOutputs:
    logits: torch.Tensor  # (n, K)
    probabilities: torch.Tensor  # (n, K)
    features: torch.Tensor  # (n, d): input of the last linear layer, else the logits

    def rows(self, index: torch.Tensor) -> ClassifierOutputs:
        """The outputs of the inputs at `index` only."""
        return ClassifierOutputs(
            self.logits[index], self.probabilities[index], self.features[index]
        )


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


def score_samples(
    targets: torch.Tensor | Sequence[int], outputs: ClassifierOutputs, top_k: int = 5
) -> list[SampleRecord]:
    """One record per image the classifier gave `outputs`: target, argmax, p_target and the
    top-k (class, probability)."""
    target_t = torch.as_tensor(targets).long().flatten().cpu()
    probs = outputs.probabilities
    k = min(top_k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    confidence = probs.gather(1, target_t[:, None]).squeeze(1).tolist()
    predicted = probs.argmax(dim=1).tolist()
    classes, probabilities = top_i.tolist(), top_p.tolist()
    return [  # plain construction: every value here is an int or a finite probability
        SampleRecord.model_construct(
            index=i,
            target=target,
            predicted=predicted[i],
            confidence=confidence[i],
            top_k=list(zip(classes[i], probabilities[i], strict=True)),
        )
        for i, target in enumerate(target_t.tolist())
    ]
