"""Text-generation metrics: BLEU and chrF (sacreBLEU), CIDEr-D, BLEU by source length.

Hypotheses and references are strings, scored with sacreBLEU's own tokenizer: give them
detokenised, or, for data that is tokenized on purpose (Multi30k's files), tokenized both
alike with `warn_if_tokenized=False`. References are either one string per hypothesis or
a list of strings per hypothesis (several references, as in captioning).

BLEU and chrF need sacreBLEU, which the library itself does not install (it comes with
`pip install 'multiattn[recipes]'`); CIDEr-D is computed here and needs nothing more.
"""

import collections
import math

from multiattn.optional_imports import require


def _reference_streams(references):
    """Per-hypothesis reference lists -> sacreBLEU's streams (None where one is missing)."""
    per_hypothesis = [[r] if isinstance(r, str) else list(r) for r in references]
    most = max((len(r) for r in per_hypothesis), default=1)
    return [[r[k] if k < len(r) else None for r in per_hypothesis] for k in range(max(most, 1))]


def corpus_bleu(hypotheses, references, max_ngram_order=4, warn_if_tokenized=True):
    """Corpus BLEU (0-100) with sacreBLEU's default `13a` tokenisation.

    Args:
        hypotheses: List of strings.
        references: List of strings, or of lists of strings (several references).
        max_ngram_order: Highest n-gram order: 4 is the usual BLEU; BLEU-1..3 for
            captioning use 1..3.
        warn_if_tokenized: Whether sacreBLEU logs its three-line warning ("It looks like
            you forgot to detokenize your test data") when 100 or more hypotheses end in
            " .". False for text tokenized on purpose, as Multi30k's files are (sacreBLEU's
            `force`); the score is the same either way.
    """
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    sacrebleu_metrics = require("sacrebleu.metrics", "multiattn.metrics.corpus_bleu")
    bleu = sacrebleu_metrics.BLEU(max_ngram_order=max_ngram_order, force=not warn_if_tokenized)
    return float(bleu.corpus_score(list(hypotheses), _reference_streams(references)).score)


def corpus_chrf(hypotheses, references):
    """Corpus chrF (0-100), sacreBLEU's defaults."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    chrf = require("sacrebleu.metrics", "multiattn.metrics.corpus_chrf").CHRF()
    return float(chrf.corpus_score(list(hypotheses), _reference_streams(references)).score)


def bleu_by_length(
    hypotheses, references, source_lengths, edges=(10, 20, 30, 40), warn_if_tokenized=True
):
    """Corpus BLEU per bucket of source length.

    Args:
        hypotheses: List of strings.
        references: As for `corpus_bleu`.
        source_lengths: Length of each source (in words or tokens).
        edges: Upper edges of the buckets: `(10, 20)` gives `1-10`, `11-20`, `21+`.
        warn_if_tokenized: As for `corpus_bleu`.

    Returns:
        A list of `{"bucket": "11-20", "low": 11, "high": 20, "count": n, "bleu": x}`
        (`high` is `None` for the last bucket), leaving out empty buckets.
    """
    _check_lengths(hypotheses, references)
    buckets = []
    low = 1
    for high in (*edges, None):
        chosen = [
            i
            for i, length in enumerate(source_lengths)
            if length >= low and (high is None or length <= high)
        ]
        if chosen:
            buckets.append(
                {
                    "bucket": f"{low}-{high}" if high is not None else f"{low}+",
                    "low": low,
                    "high": high,
                    "count": len(chosen),
                    "bleu": corpus_bleu(
                        [hypotheses[i] for i in chosen],
                        [references[i] for i in chosen],
                        warn_if_tokenized=warn_if_tokenized,
                    ),
                }
            )
        if high is not None:
            low = high + 1
    return buckets


def cider(hypotheses, references, sigma=6.0):
    """CIDEr-D (Vedantam et al. 2015) as in the COCO caption evaluation, times 10.

    TF-IDF weighted n-gram (1-4) vectors, cosine similarity with clipped hypothesis
    counts and a Gaussian penalty on the length difference, averaged over references
    and n-gram orders. Document frequencies come from the references of the corpus
    given, so the score depends on the whole set (as in the COCO tool). Text is
    lowercased and split on white space.

    Args:
        hypotheses: List of strings.
        references: List of strings or of lists of strings.
        sigma: Width of the length penalty.

    Returns:
        The corpus CIDEr-D score (the COCO tool reports it without a percent scale,
        typically 0-3).
    """
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    scores = CiderD(references, sigma).scores(hypotheses, range(len(hypotheses)))
    return sum(scores) / len(scores)


class CiderD:
    """CIDEr-D of single captions against the references of a fixed corpus.

    The document frequencies, and each reference's TF-IDF vectors, are computed once
    from `references` (as the COCO tool computes them from the corpus scored), so a
    caption's score does not depend on which others are scored with it: the reward of
    self-critical training (Rennie et al. 2017), which scores a few sampled captions
    of a few images at a time against the training corpus. `cider` is the mean of
    `CiderD(references).scores(hypotheses, range(len(hypotheses)))`.

    Args:
        references: One string, or a list of strings, per corpus item (image).
        sigma: Width of the length penalty.

    Examples:
        >>> scorer = CiderD([["a dog runs", "a brown dog runs"], ["two men sit"]])
        >>> [round(score, 2) for score in scorer.scores(["a dog runs", "a dog runs"], [0, 1])]
        [5.32, 0.0]
    """

    def __init__(self, references, sigma=6.0):
        self.sigma = sigma
        references = [[r] if isinstance(r, str) else list(r) for r in references]
        counts = [[_ngram_counts(r) for r in refs] for refs in references]
        self.document_frequency = collections.Counter()
        for item in counts:
            self.document_frequency.update({ngram for count in item for ngram in count})
        self.log_documents = math.log(float(max(len(references), 1)))
        # Per item, per reference: (vectors, norms, length in words).
        self.references = [
            [
                (*self._vectors(count), sum(c for g, c in count.items() if len(g) == 1))
                for count in item
            ]
            for item in counts
        ]

    def _vectors(self, counts):
        vector = [{} for _ in range(4)]
        norms = [0.0] * 4
        for ngram, term_frequency in counts.items():
            order = len(ngram) - 1
            weight = term_frequency * (
                self.log_documents - math.log(max(1.0, self.document_frequency[ngram]))
            )
            vector[order][ngram] = weight
            norms[order] += weight * weight
        return vector, [math.sqrt(n) for n in norms]

    def scores(self, hypotheses, indices):
        """The CIDEr-D of each hypothesis against the references of its corpus item.

        Args:
            hypotheses: List of strings.
            indices: For each hypothesis, the index of its item in `references`.

        Returns:
            A list of floats, one per hypothesis.
        """
        indices = list(indices)
        _check_lengths(hypotheses, indices)
        result = []
        for hypothesis, index in zip(hypotheses, indices, strict=True):
            hypothesis_vector, hypothesis_norms = self._vectors(_ngram_counts(hypothesis))
            hypothesis_length = len(hypothesis.lower().split())
            item = self.references[index]
            scores = [0.0] * 4
            for reference_vector, reference_norms, reference_length in item:
                penalty = math.exp(
                    -((hypothesis_length - reference_length) ** 2) / (2 * self.sigma**2)
                )
                for order in range(4):
                    if not (hypothesis_norms[order] and reference_norms[order]):
                        continue
                    reference_order = reference_vector[order]
                    dot = sum(
                        min(weight, reference_order.get(ngram, 0.0))
                        * reference_order.get(ngram, 0.0)
                        for ngram, weight in hypothesis_vector[order].items()
                    )
                    dot /= hypothesis_norms[order] * reference_norms[order]
                    scores[order] += dot * penalty
            result.append(sum(scores) / 4 / max(len(item), 1) * 10.0)
        return result


def _ngram_counts(text, max_order=4):
    words = text.lower().split()
    counts = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(words) - order + 1):
            counts[tuple(words[start : start + order])] += 1
    return counts


def _check_lengths(hypotheses, references):
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: "
            "give one reference (or one list of references) per hypothesis"
        )
