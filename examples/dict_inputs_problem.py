"""A user problem whose model takes a dict of tensors: a tiny text classifier on synthetic token sequences.

Named in a study file as ``problem: {name: "examples.dict_inputs_problem:make", options: {n_b: 300}}``.

A split's inputs may be a dict of tensors, like a tokenizer's output: here ``{"input_ids": ids,
"attention_mask": mask}`` (both ``n × length``; ids are 0 past each sequence's end, where the mask is
0). The loop calls the model as ``model(**inputs)``, so its ``forward`` takes ``input_ids`` and
``attention_mask`` by name, as a Hugging Face model does. Every tensor of the dict is indexed by the
same batch rows.

Two datasets of different sizes, one label each: task a (``n_a`` sequences) says whether the
sequence's tokens sum to a positive "sentiment" (each token has a hidden score), task b (``n_b``
other sequences) which of three hidden topics its tokens mostly belong to. Both validate on the same
``n_val`` sequences. The model is a bag of embeddings (masked mean), a shared layer and a head per task.
"""

from __future__ import annotations

import torch
from torch import nn

from objectives.helpers import accuracy
from objectives.problems import Problem, Task

TOPICS = 3


class BagOfEmbeddings(nn.Module):
    """Masked mean of token embeddings, a shared layer, a sentiment head (2) and a topic head (3)."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.shared = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.sentiment = nn.Linear(dim, 2)
        self.topic = nn.Linear(dim, TOPICS)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        h = self.shared(pooled)
        return self.sentiment(h), self.topic(h)


def make(
    seed: int, n_a: int = 2000, n_b: int = 300, n_val: int = 500, vocab: int = 64, length: int = 24, dim: int = 32
) -> Problem:
    """Build the problem. ``seed`` is the data seed sweep passes; the rest are the study's options."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(vocab, generator=g)  # each token's hidden sentiment
    topic_of = torch.randint(TOPICS, (vocab,), generator=g)  # each token's hidden topic

    def sequences(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """``n`` sequences of 4 to ``length`` tokens: inputs, sentiment labels, topic labels."""
        lengths = torch.randint(4, length + 1, (n, 1), generator=g)
        mask = (torch.arange(length) < lengths).long()
        ids = torch.randint(1, vocab, (n, length), generator=g) * mask  # 0 = padding
        sentiment = ((scores[ids] * mask).sum(dim=1) > 0).long()
        topic = (nn.functional.one_hot(topic_of[ids], TOPICS) * mask.unsqueeze(-1)).sum(dim=1).argmax(dim=1)
        return {"input_ids": ids, "attention_mask": mask}, sentiment, topic

    xa, ya, _ = sequences(n_a)
    xb, _, yb = sequences(n_b)
    xv, yv_sentiment, yv_topic = sequences(n_val)
    loss, metrics = nn.functional.cross_entropy, {"acc": accuracy}
    a = Task(train=(xa, ya), val=(xv, yv_sentiment), loss=loss, head=0, metrics=metrics)
    b = Task(train=(xb, yb), val=(xv, yv_topic), loss=loss, head=1, metrics=metrics)
    return Problem(make_model=lambda: BagOfEmbeddings(vocab, dim), a=a, b=b)
