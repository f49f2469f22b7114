"""Batches of ids for `Seq2Seq.fit`: padding, length buckets and the tf.data pipeline.

`make_dataset` turns id lists into `((source, target_in), target_out)` batches,
bucketed by source length (`length_bucket_boundaries`); `pad_batch` pads id lists into
one array.
"""

import numpy as np
import tensorflow as tf

from multiattn.special_tokens import END_ID, START_ID


def pad_batch(id_lists, length=None):
    """Pads id lists with 0 into an int32 array `(len(id_lists), length)`.

    `length` defaults to the longest list; a longer list is an error, not cut.
    """
    longest = max((len(ids) for ids in id_lists), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"a sequence has {longest} ids, more than length={length}")
    batch = np.zeros((len(id_lists), length), dtype="int32")
    for row, ids in enumerate(id_lists):
        batch[row, : len(ids)] = ids
    return batch


def length_bucket_boundaries(lengths, num_buckets=8):
    """Bucket boundaries at quantiles of `lengths`, so buckets hold similar counts.

    Bucket i holds lengths in `[boundaries[i-1], boundaries[i])`; the last is open.
    """
    lengths = np.asarray(lengths)
    if lengths.size == 0:
        return []
    quantiles = np.quantile(lengths, np.arange(1, num_buckets) / num_buckets, method="higher")
    # +1: a quantile length belongs to the bucket below its boundary.
    boundaries = sorted({int(q) + 1 for q in quantiles})
    return [b for b in boundaries if b <= lengths.max()]


def _ragged(id_lists):
    """A RaggedTensor of int32 rows, built from flat numpy arrays (fast for many rows)."""
    lengths = np.fromiter((len(ids) for ids in id_lists), dtype="int64", count=len(id_lists))
    flat = np.fromiter((i for ids in id_lists for i in ids), dtype="int32", count=lengths.sum())
    return tf.RaggedTensor.from_row_lengths(flat, lengths)


def make_dataset(source_ids, target_ids, batch_size, shuffle=False, seed=0, bucket_boundaries=None):
    """Batches id lists into `((source, target_in), target_out)` for `Seq2Seq.fit`.

    `target_in` is `[1] + target`, `target_out` is `target + [2]`; each batch is padded
    with 0 to its own longest sequence, int32. Batches are bucketed by source length
    so each holds sentences of similar length (less padding).

    Args:
        source_ids: Lists of source ids (no start/end).
        target_ids: Lists of target ids (no start/end), aligned with `source_ids`.
        batch_size: Sentences per batch (the last batch of a bucket may be smaller).
        shuffle: Shuffle the sentences (seeded; reshuffled every epoch).
        seed: Shuffle seed: the same seed gives the same order.
        bucket_boundaries: Source-length boundaries; None derives them from the data
            (`length_bucket_boundaries`); an empty list turns bucketing off.

    Returns:
        A prefetching `tf.data.Dataset`.
    """
    if len(source_ids) != len(target_ids):
        raise ValueError(f"{len(source_ids)} sources but {len(target_ids)} targets")
    if not source_ids:
        raise ValueError("no sentences to batch")
    if bucket_boundaries is None:
        bucket_boundaries = length_bucket_boundaries([len(ids) for ids in source_ids])
    dataset = tf.data.Dataset.from_tensor_slices((_ragged(source_ids), _ragged(target_ids)))
    if shuffle:
        dataset = dataset.shuffle(len(source_ids), seed=seed, reshuffle_each_iteration=True)

    def add_start_and_end(source, target):
        target_in = tf.concat([[START_ID], target], axis=0)
        target_out = tf.concat([target, [END_ID]], axis=0)
        return (source, target_in), target_out

    dataset = dataset.map(add_start_and_end, num_parallel_calls=tf.data.AUTOTUNE)
    if bucket_boundaries:
        dataset = dataset.bucket_by_sequence_length(
            element_length_func=lambda inputs, _: tf.shape(inputs[0])[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        )
        # Bucketing hides the batch count; without it Keras warns that the input "ran
        # out of data" after the first epoch and shows no progress total.
        buckets = np.searchsorted(bucket_boundaries, [len(ids) for ids in source_ids], "right")
        num_batches = sum(-(-count // batch_size) for count in np.bincount(buckets))
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    else:
        dataset = dataset.padded_batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
