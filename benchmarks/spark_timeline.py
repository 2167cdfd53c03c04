"""Where a Spark session's seconds went: its jobs and stages, read from the session's own REST API.

Not part of recspark: a helper of the benchmarks. The session's UI (``spark.ui.enabled``, on by
default) serves ``/api/v1/applications/<id>/jobs`` and ``/stages``; :func:`jobs_since` lists the
jobs that ran after a given job id with their wall seconds and the summed task run and CPU seconds
of their stages, so a benchmark can print, for one command, which Spark work took the time and how
much of the wall clock no Spark job covered (driver work: loading the model, planning, publishing).
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from dataclasses import dataclass

from pyspark.sql import SparkSession


@dataclass(frozen=True)
class JobTime:
    """One Spark job: what it was, its wall seconds, its tasks' run and CPU seconds."""

    job_id: int
    name: str
    seconds: float
    task_seconds: float
    task_cpu_seconds: float
    tasks: int

    def line(self) -> str:
        return (
            f"job {self.job_id:>3} {self.seconds:7.2f} s wall, {self.task_seconds:7.2f} s in "
            f"{self.tasks} task(s) ({self.task_cpu_seconds:.2f} s JVM CPU): {self.name[:70]}"
        )


def _get(spark: SparkSession, path: str) -> list[dict]:
    base = spark.sparkContext.uiWebUrl
    if not base:
        return []
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{base}/api/v1/applications/{app}/{path}", timeout=10) as reply:
        return json.loads(reply.read())


def _when(text: str) -> dt.datetime:
    return dt.datetime.strptime(text.replace("GMT", ""), "%Y-%m-%dT%H:%M:%S.%f")


def last_job_id(spark: SparkSession) -> int:
    """The newest job's id so far (-1 before any job, or with the UI off)."""
    jobs = _get(spark, "jobs")
    return max((job["jobId"] for job in jobs), default=-1)


def jobs_since(spark: SparkSession, after: int) -> list[JobTime]:
    """The finished jobs with an id above ``after``, oldest first (empty with the UI off)."""
    stages = {stage["stageId"]: stage for stage in _get(spark, "stages?status=complete")}
    found = []
    for job in sorted(_get(spark, "jobs"), key=lambda job: job["jobId"]):
        if job["jobId"] <= after or "completionTime" not in job:
            continue
        mine = [stages[s] for s in job["stageIds"] if s in stages]
        found.append(
            JobTime(
                job_id=job["jobId"],
                name=job.get("description") or job["name"],
                seconds=(
                    _when(job["completionTime"]) - _when(job["submissionTime"])
                ).total_seconds(),
                task_seconds=sum(s.get("executorRunTime", 0) for s in mine) / 1e3,
                task_cpu_seconds=sum(s.get("executorCpuTime", 0) for s in mine) / 1e9,
                tasks=sum(s.get("numCompleteTasks", 0) for s in mine),
            )
        )
    return found
