"""Turning a run directory into a report: collect, analyse, render; figures, fonts, references.
"""
