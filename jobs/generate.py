"""spark-submit entry point for `recspark generate`.

spark-submit jobs/generate.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="generate", stop_session=True))
