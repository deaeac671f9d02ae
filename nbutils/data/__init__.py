"""Datasets: fetching them, reading every supported layout into one table, texts kept on disk, and
the statistics that notebook 02 shows.
"""
