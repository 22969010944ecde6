"""Runnable semsim pipelines, their options, and the ``semsim`` command line."""
