"""The team templates in infra/ parse, name the four services, and hold no credential."""

from __future__ import annotations

import json

import yaml

from conftest import REPO_ROOT

INFRA = REPO_ROOT / "infra"


def test_compose_file_runs_the_four_services_with_the_password_from_the_environment():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert set(compose["services"]) == {"postgres", "mlflow", "prefect", "worker"}
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert "PASSWORD" not in key or str(value).startswith("${"), (name, key)
        assert "@" not in str((service.get("environment") or {}).get("MLFLOW_TRACKING_URI", "")), name
    assert compose["services"]["worker"]["command"].startswith("prefect worker start --pool alignpipe")


def test_kubernetes_work_pool_template_is_a_prefect_base_job_template():
    template = json.loads((INFRA / "kubernetes" / "work-pool-template.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    assert template["job_configuration"]["job_manifest"]["kind"] == "Job"
    properties = template["variables"]["properties"]
    assert {"image", "gpus", "project_claim", "env"} <= set(properties)
    assert "@" not in properties["env"]["default"]["MLFLOW_TRACKING_URI"]
