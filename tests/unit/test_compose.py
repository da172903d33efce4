"""docker-compose.yml is valid: `docker compose config -q` where the client exists,
and its structure (KRaft Kafka, worker wiring, sandbox profile) everywhere."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def _compose_cmd() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_is_valid():
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("no docker compose client on this machine (docker compose / docker-compose not found)")
    result = subprocess.run([*cmd, "-f", str(COMPOSE), "--profile", "sandbox", "config", "-q"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_compose_structure():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "Kafka must run in KRaft mode"
    worker = services["worker"]
    assert worker["build"] == "."
    env = worker["environment"]
    for var in ["KAFKA_BROKER", "TALKSTREAM_CUSTOMCRM_URL", "TALKSTREAM_CUSTOMCRM_TOKEN", "TALKSTREAM_BUSINESSNXT_URL",
                "TALKSTREAM_BUSINESSNXT_TOKEN_URL", "TALKSTREAM_BUSINESSNXT_CLIENT_ID",
                "TALKSTREAM_BUSINESSNXT_CLIENT_SECRET", "TALKSTREAM_BUSINESSNXT_COMPANY", "TALKSTREAM_STORE"]:
        assert var in env, var
    assert env["KAFKA_BROKER"] == "kafka://kafka:9092"
    assert services["customcrm"]["profiles"] == ["sandbox"]
    assert services["businessnxt"]["profiles"] == ["sandbox"]
    assert (ROOT / "Dockerfile").exists()


def test_compose_kafka_is_the_tested_version_with_the_tested_settings():
    """docker-compose.yml runs the Apache Kafka version the tests run, with the broker settings
    the test brokers share (streams.apache_kafka.BROKER_SETTINGS)."""
    from streams.apache_kafka import BROKER_SETTINGS, KAFKA_VERSION

    kafka = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = {name: str(value) for name, value in kafka["environment"].items()}
    for setting, value in BROKER_SETTINGS.items():
        name = "KAFKA_" + setting.upper().replace(".", "_")
        assert env.get(name) == value, f"{name}: {env.get(name)!r}, the tests use {value!r}"
