"""spark-submit entry point for `recspark nightly`.

spark-submit jobs/nightly.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="nightly", stop_session=True))
