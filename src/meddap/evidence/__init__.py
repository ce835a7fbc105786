"""Stage 4, what the run shows: paired statistics (stats), bootstrap intervals, synthetic-image
quality (quality), figures, the report and the quality floors of ``make check-results`` (check).
"""
