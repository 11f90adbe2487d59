"""Hopper: a background-job broker speaking the Faktory Work Protocol v2."""

__version__ = "0.1.0"
