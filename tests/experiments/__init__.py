"""Tests of rectified.experiments: tasks, recipes, runs, sweeps, the reproduce suite."""
