"""spark-submit entry point for `recspark evaluate`.

spark-submit jobs/evaluate.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="evaluate", stop_session=True))
