"""Experiments: tasks (data + model), training runs, comparisons and reports."""
