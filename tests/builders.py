"""Shared test builders (import as `from builders import ...`: pytest puts tests/ on sys.path through
tests/conftest.py)."""

from __future__ import annotations


def full_int8_tflite(fn, representative) -> bytes:
    """A full-integer .tflite (int8 weights and activations, int8 input and output tensors) of a
    tf.function with one input signature, converted with the export stage's own settings
    (edgekd.export.to_tflite.full_int8_config) and `representative` (a generator function of [batch])."""
    import tensorflow as tf

    from edgekd.export.to_tflite import full_int8_config

    c = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    full_int8_config(representative, io="int8")(c)
    return c.convert()
