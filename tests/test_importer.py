"""clouds.yaml settings that say how servers are reached become the provider's."""

from __future__ import annotations

import pytest

from oms_cli import importer, main
from oms_cli.client import CliError


def test_auto_ip_and_floating_network_become_floating_ip_auto(tmp_path):
    path = tmp_path / "clouds.yaml"
    auth = "auth: {auth_url: 'https://keystone.example/v3', username: u, password: p, project_name: pr}"
    path.write_text(
        "clouds:\n"
        f"  private-only:\n    {auth}\n    auto_ip: true\n    floating_network: ext-floating1\n"
        f"  public:\n    {auth}\n"
    )
    bodies = dict(importer.from_clouds_yaml(str(path)))
    assert (bodies["private-only"]["floating_ip"], bodies["private-only"]["floating_network"]) == (
        "auto",
        "ext-floating1",
    )
    assert "floating_ip" not in bodies["public"] and "floating_network" not in bodies["public"]


def _clouds(folder, *names):
    path = folder / "elsewhere.yaml"
    auth = "auth: {auth_url: 'https://keystone.example/v3', username: u, password: p, project_name: pr}"
    path.write_text("clouds:\n" + "".join(f"  {name}:\n    {auth}\n" for name in names))
    return path


@pytest.fixture
def openstack_env(tmp_path, monkeypatch):
    """No clouds.yaml where openstacksdk looks (cwd, home) but what a test points at."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    monkeypatch.delenv("OS_CLOUD", raising=False)
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE", raising=False)
    return monkeypatch


class Recorder:
    """A client that records the providers the CLI registers."""

    def __init__(self):
        self.posted = []

    def call(self, method, path, body):
        self.posted.append(body["name"])
        return {"auth_type": "password", "region": None, **body}


def _import(*argv) -> list[str]:
    client = Recorder()
    args = main.parser().parse_args(["providers", "import", *argv])
    assert main.cmd_providers_import(args, client) == 0
    return client.posted


def test_without_a_file_the_clouds_yaml_is_found_where_openstack_looks(openstack_env, tmp_path):
    openstack_env.setenv("OS_CLIENT_CONFIG_FILE", str(_clouds(tmp_path, "ovh-gra", "infomaniak")))
    assert sorted(_import()) == ["infomaniak", "ovh-gra"]
    openstack_env.setenv("OS_CLOUD", "infomaniak")  # as `openstack` would, only that one
    assert _import() == ["infomaniak"]
    assert _import("--cloud", "ovh-gra") == ["ovh-gra"]  # the option before the environment


def test_without_any_clouds_yaml_the_error_says_where_it_looked(openstack_env):
    with pytest.raises(CliError, match="OS_CLIENT_CONFIG_FILE"):
        _import()
