"""The ``rectified`` commands of the experiments: train, sweep, reproduce, report."""
