"""The contract every other part builds on: user-fixable errors, atomic writes, paths of the
repository and of a run directory, the run-directory file contract, and command-line flags
generated from config dataclasses.
"""
