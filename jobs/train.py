"""spark-submit entry point for `recspark train`.

spark-submit jobs/train.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="train", stop_session=True))
