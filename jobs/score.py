"""spark-submit entry point for `recspark score`.

spark-submit jobs/score.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="score", stop_session=True))
