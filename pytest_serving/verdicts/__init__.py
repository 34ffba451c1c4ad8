"""Release and baseline verdicts from numbers alone: McNemar's exact test, paired block bootstrap
intervals of speed ratios, pass / fail / inconclusive with reasons. No I/O; the load engine (the
baseline gate) and the release comparison both judge with it, so it imports neither.
"""
