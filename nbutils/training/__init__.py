"""Training: fine-tuning, its launcher and callbacks, and what measures training throughput."""
