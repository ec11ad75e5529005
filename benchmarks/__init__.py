"""basic_tf benchmarks: one module per figure, each measured in fresh subprocesses.

Run all: `python -m benchmarks` (or `python -m benchmarks NAME ...`). Each figure writes
benchmarks/results/NAME.json; the runner rewrites the table section of benchmarks/README.md.
"""
