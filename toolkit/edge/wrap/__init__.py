"""Foreign classifiers brought into the artifact contract: the uint8 NHWC RGB head and logits tail
built around the untouched graph (graph.py), the IR version lowered to what the installed
onnxruntime reads (irversion.py), and the whole request gated on parity with the original
(wrapper.py)."""
