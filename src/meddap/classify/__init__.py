"""Stage 3, classifiers: architectures, training (classifier), per-image metrics (metrics),
evaluation on test sets (evaluate), robustness to corruptions (robustness) and ``meddap
predict`` (predict).
"""
