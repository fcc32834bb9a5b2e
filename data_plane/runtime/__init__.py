"""Inference runtimes: ONNX Runtime (TensorRT → CUDA → CPU execution providers), native TensorRT."""
