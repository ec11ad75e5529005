"""Asks a training pipeline for its first batch in a fresh process, so a test can bound the wait.

Run by test_data_input_faults.py: python3 first_batch_worker.py '<list of make_dataset kwargs
as JSON, "data" holding the DataConfig fields>'. Prints, per kwargs, "BATCH" or "ERROR
<seconds> <message>" (the message skips.input_error_message extracts, else the error's first
line). A pipeline that spins forever
is killed by the caller's timeout.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from basic_tf.data import pipeline, skips  # noqa: E402
from basic_tf.data.data_config import DataConfig  # noqa: E402


def main(kwargs):
    start = time.perf_counter()
    try:
        data = DataConfig(**kwargs.pop("data"))
        next(iter(pipeline.make_dataset(None, data, training=True, **kwargs)))
    except Exception as e:  # what the user would see first
        message = skips.input_error_message(e) or str(e).splitlines()[0]
        print(f"ERROR {time.perf_counter() - start:.1f} {message}")
        return
    print("BATCH")


if __name__ == "__main__":
    for config in json.loads(sys.argv[1]):
        main(config)
        sys.stdout.flush()
