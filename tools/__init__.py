"""The command-line programs: thin absl apps (flags -> gin -> the library), each runnable as
`python3 tools/<name>.py` in a checkout and installed by setup.py (as basic_tf/tools) behind the
`basic-*` console scripts (tools/train.py is `basic-train`, and so on; see basic_tf/cli.py)."""
