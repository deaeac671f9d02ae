"""Fine-tuning with Hugging Face Trainer and what surrounds it: resume, live curves, measurement,
TensorBoard, distillation, the TF-IDF baseline, metrics, layer freezing, the distributed launch.
"""
