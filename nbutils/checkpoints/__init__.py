"""Model folders: Google TF checkpoints read and written without TensorFlow, conversion to Hugging
Face folders, checks that a folder is complete, weight provenance, and the random demo BERT.
"""
