"""The release decision: a candidate model against the current one on the same server.

``stats`` holds the statistics (McNemar's exact test, paired block bootstrap of speed ratios),
``verdict`` turns them into pass / fail / inconclusive with reasons.
"""
