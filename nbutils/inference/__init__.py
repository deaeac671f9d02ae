"""Classifying new texts with a fine-tuned model folder: PyTorch and ONNX Runtime backends.
"""
