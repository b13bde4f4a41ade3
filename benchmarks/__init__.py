"""trio-mesa's benchmark suite (issue 6): ``make bench`` runs ``benchmarks/run.py``."""
