"""What each artifact was derived from: lineage records and file digests (lineage), checks of
model files (file_checks) and of a generation job's recorded inputs (preflight).
"""
