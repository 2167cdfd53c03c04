"""spark-submit entry point for `recspark prepare`.

spark-submit jobs/prepare.py [--config FILE] [--set k=v]
"""

import sys

from recspark.cli import main

if __name__ == "__main__":
    sys.exit(main(command="prepare", stop_session=True))
