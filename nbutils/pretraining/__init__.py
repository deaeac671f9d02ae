"""Domain-adaptive pre-training of a BERT folder: masked-LM and ELECTRA, and a fill-mask probe.
"""
