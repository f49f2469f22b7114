import math

import pytest

from multiattn import metrics


def test_bleu_perfect_and_partial():
    references = ["the cat sat on the mat", "a dog runs in the park today"]
    assert metrics.corpus_bleu(references, references) == pytest.approx(100.0)
    partial = metrics.corpus_bleu(
        ["the cat sat on a mat", "a dog runs in a park today"], references
    )
    assert 10.0 < partial < 90.0
    assert metrics.corpus_bleu([], []) == 0.0


def test_bleu_orders_and_multiple_references():
    hypotheses = ["a red circle above a blue square"]
    references = [["a red circle on top of a blue square", "a red circle above a blue square"]]
    assert metrics.corpus_bleu(hypotheses, references) == pytest.approx(100.0)
    single = [["a red circle on top of a blue square"]]
    bleu1 = metrics.corpus_bleu(hypotheses, single, max_ngram_order=1)
    bleu4 = metrics.corpus_bleu(hypotheses, single, max_ngram_order=4)
    assert bleu1 > bleu4 > 0


def test_chrf():
    assert metrics.corpus_chrf(["hello world"], ["hello world"]) == pytest.approx(100.0)
    assert metrics.corpus_chrf(["hello wrld"], ["hello world"]) < 100.0


def test_bleu_by_length_buckets():
    hypotheses = ["a b", "a b c d e f g h i j k l", "x y z"]
    references = ["a b", "a b c d e f g h i j k l", "p q r"]
    buckets = metrics.bleu_by_length(hypotheses, references, [2, 12, 25], edges=(10, 20))
    assert [b["bucket"] for b in buckets] == ["1-10", "11-20", "21+"]
    assert [b["count"] for b in buckets] == [1, 1, 1]
    assert buckets[1]["bleu"] == pytest.approx(100.0)
    assert buckets[2]["bleu"] == 0.0


def test_bleu_on_tokenized_text_warns_unless_told_and_scores_the_same(caplog):
    """sacreBLEU warns ("forgot to detokenize") when 100 hypotheses end in " ."; with
    `warn_if_tokenized=False` it does not, and the score is the same to the last bit."""
    hypotheses = [f"a dog runs after ball {index} ." for index in range(100)]
    references = [f"a dog runs after the ball {index} ." for index in range(100)]
    lengths = [6] * 100
    with caplog.at_level("WARNING", logger="sacrebleu"):
        warned = metrics.corpus_bleu(hypotheses, references)
        warned_by_length = metrics.bleu_by_length(hypotheses, references, lengths)
    assert caplog.text.count("forgot to detokenize") == 2
    caplog.clear()
    with caplog.at_level("WARNING", logger="sacrebleu"):
        quiet = metrics.corpus_bleu(hypotheses, references, warn_if_tokenized=False)
        quiet_by_length = metrics.bleu_by_length(
            hypotheses, references, lengths, warn_if_tokenized=False
        )
    assert caplog.text == ""
    assert 0 < quiet == warned < 100
    assert quiet_by_length == warned_by_length


def test_cider_rewards_the_distinctive_caption():
    references = [
        ["a red circle above a blue square", "a red circle over a blue square"],
        ["a green triangle left of a small yellow circle"],
        ["two dogs play in the snow"],
    ]
    perfect = [refs[0] for refs in references]
    assert metrics.cider(perfect, references) > 5.0
    worse = ["a blue circle above a red square", perfect[1], perfect[2]]
    assert metrics.cider(worse, references) < metrics.cider(perfect, references)
    wrong = ["zebra", "zebra", "zebra"]
    assert metrics.cider(wrong, references) == pytest.approx(0.0)


def test_cider_matches_hand_computation():
    # No n-gram is shared between the two images, so every one has idf log(2) and an
    # identical caption has cosine 1 at each of the four orders: CIDEr-D = 10.
    references = [["big red circle now"], ["small blue square then"]]
    assert metrics.cider(["big red circle now", "small blue square then"], references) == (
        pytest.approx(10.0)
    )
    # Two-word captions have no 3- and 4-grams: only two of the four orders score.
    assert metrics.cider(["red circle", "blue square"], [["red circle"], ["blue square"]]) == (
        pytest.approx(5.0)
    )
    # One word too many: orders 1-4 lose cosine and the length penalty exp(-1/72) applies.
    longer = metrics.cider(["big red circle now big", "small blue square then"], references)
    assert 5.0 < longer < 10.0 * (1 + math.exp(-1 / 72)) / 2


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        metrics.corpus_bleu(["a", "b"], ["a"])


def test_cider_d_scores_each_caption_against_the_whole_corpus():
    references = [
        ["a dog runs on the grass", "a brown dog runs"],
        ["two men sit on a bench", "men sitting"],
        ["a child jumps into the pool", "a kid swims"],
    ]
    hypotheses = ["a dog runs", "two men sit", "a child swims"]
    scorer = metrics.CiderD(references)
    scores = scorer.scores(hypotheses, [0, 1, 2])
    # The corpus score is their mean, and a caption's score does not depend on which
    # others are scored with it (the document frequencies are the corpus').
    assert metrics.cider(hypotheses, references) == pytest.approx(sum(scores) / 3)
    assert scorer.scores(hypotheses[1:2], [1]) == pytest.approx(scores[1:2])
    # The same caption scores against the references of the item it is given.
    assert scorer.scores(["a dog runs", "a dog runs"], [0, 1])[1] == 0.0
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        scorer.scores(hypotheses[:2], [0])
