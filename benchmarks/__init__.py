"""Speed and memory benchmarks of ``rectified``, printed as tables of ratios."""
