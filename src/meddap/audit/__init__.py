"""Checks over a finished run: the lineage (leak) audit (leaks) and ``meddap verify`` of recorded
digests (verify).
"""
