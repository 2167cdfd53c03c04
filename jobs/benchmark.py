"""spark-submit entry point for `recspark benchmark`.

spark-submit jobs/benchmark.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="benchmark", stop_session=True))
