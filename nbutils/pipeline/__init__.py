"""Running the numbered notebooks headless (``nbutils run``) with one writer per run directory.
"""
