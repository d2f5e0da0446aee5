"""fpac-async: the FPAC agent (feature-point actor-critic) and the core shared by actors and learner."""

__version__ = "0.1.0"
