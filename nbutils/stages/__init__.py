"""One object per notebook stage: a notebook opens its stage through it.
"""
