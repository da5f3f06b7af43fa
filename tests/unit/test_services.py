"""TEST_SERVICES: which services the suite uses (tests/services.py). Only the selection is
tested here: no Docker engine runs on this project's machines."""

from __future__ import annotations

import pytest

from tests import services


def test_local_services_by_default():
    assert services.selected({}) == "local"
    assert services.selected({"TEST_SERVICES": ""}) == "local"
    assert services.prepare({"TEST_SERVICES": "local"}) == "local"


def test_containers_are_chosen_by_name():
    assert services.selected({"TEST_SERVICES": "containers"}) == "containers"


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="TEST_SERVICES must be one of local, containers"):
        services.selected({"TEST_SERVICES": "docker"})


def test_no_engine_means_a_clear_refusal(tmp_path):
    env = {"TEST_SERVICES": "containers", "DOCKER_HOST": f"unix://{tmp_path}/docker.sock"}
    assert services.docker_available(env) is False
    with pytest.raises(RuntimeError, match="needs a Docker engine"):
        services.prepare(env)


def test_a_tcp_engine_is_left_to_testcontainers():
    assert services.docker_available({"DOCKER_HOST": "tcp://10.0.0.5:2376"}) is True
