"""Studies run ON the service, not part of it: the actor-count scaling study (fpac-scaling) and
experiment grids of tasks x agents x seeds with paper-style figures (fpac-experiment).

Nothing in actors/, learner/, fpac_async/ or deploy/ imports this package.
"""
