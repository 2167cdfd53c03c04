"""spark-submit entry point for `recspark recommend`.

spark-submit jobs/recommend.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="recommend", stop_session=True))
