"""The fused engine: a rule traced into one elementwise program that a C++ kernel runs in a
single pass (:mod:`.engine`; the program :mod:`.program` in the instruction set
:mod:`.instructions`, the kernel :mod:`.kernel`, kept plans :mod:`.plans`, and torch's fused
Adam kernels on CUDA :mod:`.cuda`)."""
