"""Quantized variants of an fp32 contract classifier: fp16 and static int8.

- config.py: the quantize options with their defaults and help (what `toolkit quantize`,
  `toolkit export --precision` and `toolkit.quantize` take).
- classifier.py: `quantize_classifier`, the whole request: data, the guard, the gate against fp32.
- variants.py: fp16 conversion, one static int8 pass and the accuracy-guard loop.
- recipe.py: the per-target int8 layout (integer input head, packed first convolution, float logits).
- nhwc.py: rewrites that let a channels-last runtime cancel a Transpose.
"""
