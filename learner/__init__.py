"""The learner service: receives actor streams into the replay, runs SAC updates, broadcasts weights.

Imports `fpac_async` only, never `actors` (docs/INTERFACES.md, dependency rule).
"""
