"""Text to token ids: WordPiece vocabularies and the tokenizers built from them, and cutting texts
of any length to ``max_length`` tokens.
"""
