"""clouds.yaml settings that say how servers are reached become the provider's."""

from __future__ import annotations

from oms_cli import importer


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
