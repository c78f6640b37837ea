"""The pieces of ``memgen sweep``: search space, metric names, storage, objectives, workers.

``memgen.sweep.sweep`` ties them together; each module here is small enough to read alone.
"""
