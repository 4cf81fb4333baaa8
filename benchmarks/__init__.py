"""Benchmarks behind `make bench`: `python -m benchmarks.run` writes BENCHMARKS.md.

Everything is measured the way a user meets it: the real `segmentation run` command in a
fresh process (start-up and imports included), next to two reference points run the same
way (a trivial Dagster job, and the plain pandas + scikit-learn notebook approach). Inputs
and scratch files live in benchmarks/data/, which git ignores.
"""
