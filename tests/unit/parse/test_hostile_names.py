"""Names and addresses that only a forged file could hold stop at the parser, as a ParseError
naming the file, the line or object, and the name shown escaped on one line.

What Linux or Kubernetes allows still parses unchanged (`$(touch${IFS}P)` is a valid interface
name): it is quoted where a command is built, not refused here. Addresses carry no IPv6 zone
(`fd00::1%$(id)`), which Python's ipaddress would keep and print back into a command.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from tests.strategies import KUBERNETES_NODE_NAMES, LINUX_INTERFACE_NAMES, NAMES_LINUX_REFUSES
from vipcheck.cases import Outcome, cases_for, run_case
from vipcheck.checks import CATALOGUE
from vipcheck.facts import Facts
from vipcheck.gather.live import node_inventory
from vipcheck.parse import ParseError
from vipcheck.parse.handshakes import parse_probe_output, parse_probe_plan
from vipcheck.parse.iproute import parse_interfaces, parse_ip_json, parse_ip_text
from vipcheck.parse.ipvsadm import parse_ipvsadm_list
from vipcheck.parse.kube import (
    parse_endpoint_slices,
    parse_kube_proxy_config,
    parse_nodes,
    parse_services,
)
from vipcheck.parse.procfs import parse_proc_ip_vs
from vipcheck.settings import DEFAULTS
from vipcheck.snapshot import load_snapshot

HOSTILE_INTERFACE_NAMES = ["n\ntouch P", "a/b", "x" * 16, "a:b", "a b", ".", "..", "\ud800"]
HOSTILE_NODE_NAMES = ["-oProxyCommand=x", "n\nx", "Node-1", "$(id)", "a/../b", "x" * 254]
SHELL_NAMES = ["$(touch${IFS}P)", "a;b|c&d`e`", "\x1b]0;t\x07"]


def one_line(error: ParseError) -> str:
    """The error as printed, checked to be one line without control characters."""
    text = str(error)
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in text), text
    return text


# --- interface names: ip -j, ip text, /sys/class/net ----------------------------------------------


def ip_link_json(name: str) -> str:
    return json.dumps([{"ifindex": 7, "ifname": name, "flags": ["UP"], "operstate": "UP"}])


@pytest.mark.parametrize("name", HOSTILE_INTERFACE_NAMES)
def test_ip_json_refuses_a_name_linux_forbids(name: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_ip_json("", ip_link_json(name), "ip-addr.json", "nodes/n/ip-link.json")
    assert caught.value.source == "nodes/n/ip-link.json"
    assert "interface name" in one_line(caught.value)


def test_a_refused_name_is_shown_escaped() -> None:
    name = "\x1b]0;pwned\x07\x1b[2J" + "x" * 8
    with pytest.raises(ParseError) as caught:
        parse_ip_json("", ip_link_json(name), "a", "ip-link.json")
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in one_line(caught.value)
    assert "longer than 15 bytes" in caught.value.message


@pytest.mark.parametrize("name", SHELL_NAMES)
def test_names_linux_allows_parse_unchanged_in_every_format(name: str) -> None:
    as_json = parse_ip_json("", ip_link_json(name), "a", "ip-link.json")
    as_text = parse_ip_text(
        "", f"7: {name}@if5: <UP> mtu 1500 state UP\n    link/ether 0a:00:00:00:00:01\n", "a", "b"
    )
    as_sys = parse_interfaces(
        None, (f"/sys/class/net/{name}/ifindex:7\n", "nodes/n/sys-class-net.txt")
    )
    assert [i.name for i in (*as_json, *as_text, *as_sys)] == [name] * 3


@pytest.mark.parametrize("name", ["a/b", "x" * 16, "\x1b[2J" + "y" * 12])
def test_ip_text_refuses_a_name_linux_forbids_at_its_line(name: str) -> None:
    text = (
        "1: lo: <LOOPBACK,UP> mtu 65536 state UNKNOWN\n"
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        f"5: {name}@if3: <UP> mtu 1500 state UP\n"
    )
    with pytest.raises(ParseError) as caught:
        parse_ip_text(text, "", "nodes/n/ip-addr.txt", "b")
    assert (caught.value.source, caught.value.line) == ("nodes/n/ip-addr.txt", 3)
    assert "interface name" in one_line(caught.value)


@pytest.mark.parametrize("name", ["x" * 16, ".."])
def test_sys_class_net_refuses_a_name_linux_forbids_at_its_line(name: str) -> None:
    text = f"/sys/class/net/lo/ifindex:1\n/sys/class/net/{name}/ifindex:9\n"
    with pytest.raises(ParseError) as caught:
        parse_interfaces(None, (text, "nodes/n/sys-class-net.txt"))
    assert (caught.value.source, caught.value.line) == ("nodes/n/sys-class-net.txt", 2)
    assert "interface name" in one_line(caught.value)


@given(LINUX_INTERFACE_NAMES)
def test_every_name_linux_allows_round_trips_through_ip_json(name: str) -> None:
    (interface,) = parse_ip_json("", ip_link_json(name), "a", "ip-link.json").interfaces
    assert interface.name == name


@given(NAMES_LINUX_REFUSES)
def test_every_name_linux_refuses_is_a_parse_error(name: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_ip_json("", ip_link_json(name), "a", "ip-link.json")
    one_line(caught.value)


# --- interface addresses --------------------------------------------------------------------------


def test_ip_json_refuses_an_address_with_a_zone() -> None:
    addr = [
        {
            "ifindex": 2,
            "ifname": "eth0",
            "operstate": "UP",
            "addr_info": [{"family": "inet6", "local": "fe80::1%$(id)", "prefixlen": 64}],
        }
    ]
    with pytest.raises(ParseError, match="zone") as caught:
        parse_ip_json(json.dumps(addr), "", "nodes/n/ip-addr.json", "b")
    assert caught.value.source == "nodes/n/ip-addr.json"


def test_ip_text_refuses_an_address_with_a_zone() -> None:
    text = "2: eth0: <UP> mtu 1500 state UP\n    inet6 fe80::1%eth0/64 scope link\n"
    with pytest.raises(ParseError, match="zone") as caught:
        parse_ip_text(text, "", "nodes/n/ip-addr.txt", "b")
    assert caught.value.line == 2


# --- Node names and addresses from the API --------------------------------------------------------


def node(name: str, **status: Any) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name}, "spec": {}, "status": status}


@pytest.mark.parametrize("name", HOSTILE_NODE_NAMES)
def test_a_node_named_as_kubernetes_forbids_is_refused(name: str) -> None:
    document = {"kind": "NodeList", "items": [node("node-1"), node(name)]}
    with pytest.raises(ParseError) as caught:
        parse_nodes(json.dumps(document), "cluster/nodes.json")
    assert caught.value.source == "cluster/nodes.json"
    assert ": metadata.name: not a Kubernetes Node name" in one_line(caught.value)


@given(KUBERNETES_NODE_NAMES)
def test_every_kubernetes_node_name_parses_unchanged(name: str) -> None:
    (parsed,) = parse_nodes(json.dumps(node(name)), "nodes.json")
    assert parsed.name == name


def test_a_node_address_with_a_zone_is_refused() -> None:
    document = node("node-1", addresses=[{"type": "InternalIP", "address": "fd00::1%$(id)"}])
    with pytest.raises(ParseError, match=r"status\.addresses\[type=InternalIP\].*zone"):
        parse_nodes(json.dumps(document), "nodes.json")


def test_a_pod_cidr_with_a_zone_is_refused() -> None:
    document = {"kind": "Node", "metadata": {"name": "n"}, "spec": {"podCIDR": "fe80::%$(id)/64"}}
    with pytest.raises(ParseError, match=r"node-1|spec\.podCIDR: .*zone"):
        parse_nodes(json.dumps(document), "nodes.json")


def test_an_exclude_cidr_with_a_zone_is_refused() -> None:
    config = "kind: KubeProxyConfiguration\nipvs:\n  excludeCIDRs: ['fe80::%x/64']\n"
    with pytest.raises(ParseError, match=r"ipvs\.excludeCIDRs\[0\]: .*zone"):
        parse_kube_proxy_config(config, "kube-proxy.json")


def endpoint_slice(endpoint: dict[str, Any]) -> str:
    return json.dumps(
        {
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default"},
            "addressType": "IPv6",
            "endpoints": [endpoint],
        }
    )


def test_an_endpoint_address_with_a_zone_is_refused() -> None:
    text = endpoint_slice({"addresses": ["fd00::1%$(id)"]})
    with pytest.raises(ParseError) as caught:
        parse_endpoint_slices(text, "cluster/endpointslices.json")
    assert caught.value.message.startswith("default/web-1: endpoints[0].addresses[0]: ")
    assert "zone" in caught.value.message


@pytest.mark.parametrize("name", HOSTILE_NODE_NAMES)
def test_an_endpoints_node_name_is_a_kubernetes_name(name: str) -> None:
    text = endpoint_slice({"addresses": ["fd00::1"], "nodeName": name})
    with pytest.raises(ParseError) as caught:
        parse_endpoint_slices(text, "cluster/endpointslices.json")
    assert "endpoints[0].nodeName: not a Kubernetes Node name" in one_line(caught.value)


def test_a_node_hint_is_a_kubernetes_name() -> None:
    hints = {"forNodes": [{"name": "-oProxyCommand=x"}]}
    text = endpoint_slice({"addresses": ["fd00::1"], "hints": hints})
    with pytest.raises(ParseError, match=r"hints\.forNodes\[0\]\.name: not a Kubernetes Node"):
        parse_endpoint_slices(text, "cluster/endpointslices.json")


def test_a_service_address_with_a_zone_is_refused() -> None:
    document = {
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "fd00::1", "externalIPs": ["fd00::2%$(id)"], "ports": [{"port": 80}]},
    }
    with pytest.raises(ParseError, match=r"spec\.externalIPs\[0\]: .*zone"):
        parse_services(json.dumps(document), "services.json")


def test_an_objects_name_in_a_message_is_one_line() -> None:
    document = {
        "kind": "Service",
        "metadata": {"name": "web\n\x1b[2J", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.300", "ports": [{"port": 80}]},
    }
    with pytest.raises(ParseError) as caught:
        parse_services(json.dumps(document), "services.json")
    assert "default/web\\n\\x1b[2J: spec.clusterIP" in one_line(caught.value)


# --- IPVS tables ----------------------------------------------------------------------------------

IPVSADM = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  [fd00::10]:80 rr
  -> {real}                    Masq    1      0          0
"""


@pytest.mark.parametrize("real", ["[fd00::1%x]:80", "[fd00::1%$(id)]:80"])
def test_ipvsadm_refuses_a_real_server_with_a_zone(real: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_ipvsadm_list(IPVSADM.format(real=real), "nodes/n/ipvsadm-Ln.txt")
    assert (caught.value.source, caught.value.line) == ("nodes/n/ipvsadm-Ln.txt", 5)


def test_ipvsadm_rules_refuse_a_real_server_with_a_zone() -> None:
    text = "-A -t [fd00::10]:80 -s rr\n-a -t [fd00::10]:80 -r [fd00::1%x]:80 -m -w 1\n"
    with pytest.raises(ParseError) as caught:
        parse_ipvsadm_list(text, "nodes/n/ipvsadm-S.txt")
    assert caught.value.line == 2


def test_proc_ip_vs_refuses_a_real_server_with_a_zone() -> None:
    text = (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "TCP  [fd00:0000:0000:0000:0000:0000:0000:0010]:0050 rr\n"
        "  -> [fd00:0000:0000:0000:0000:0000:0000:0001%x]:0050      Masq    1      0          0\n"
    )
    with pytest.raises(ParseError) as caught:
        parse_proc_ip_vs(text, "nodes/n/proc-ip_vs.txt")
    assert caught.value.line == 3


# --- probes ---------------------------------------------------------------------------------------


def test_probe_output_refuses_an_address_with_a_zone() -> None:
    text = "TOOL bash\nATTEMPT fd00::1%$(id) 80 1 CONNECTED 3\nDONE\n"
    with pytest.raises(ParseError, match="zone") as caught:
        parse_probe_output(text, "probes/node-1/vip.txt")
    assert caught.value.line == 2


def plan(point: dict[str, Any] | None = None, **target: Any) -> str:
    """A plan of one target, as plan_as_json writes it."""
    return json.dumps(
        {
            "settings": {},
            "vantages": [point or {"name": "node-1", "node": "node-1", "spec": "ssh://node-1"}],
            "targets": [
                {
                    "round": "vip",
                    "vantage": "node-1",
                    "address": "[fd00::10]:80",
                    "attempts": 2,
                    "service": "default/web:80/TCP",
                    "kind": "ClusterIP",
                    **target,
                }
            ],
        }
    )


def test_a_probe_plan_as_written_parses() -> None:
    parsed = parse_probe_plan(plan(backend_node="node-2"), "probes/plan.json")
    assert parsed.vantages[0].node == "node-1"
    assert parsed.targets[0].backend_node == "node-2"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (plan({"name": "-oProxyCommand=x", "node": "-oProxyCommand=x", "spec": ""}), "vantages[0]"),
        (plan({"name": "n\nx", "node": None, "spec": ""}), "vantages[0].name"),
        (plan({"name": "../../x", "node": None, "spec": ""}), "vantages[0].name"),
        (plan(vantage="-oProxyCommand=x"), "targets[0].vantage"),
        (plan(backend_node="n\nx"), "targets[0].backend_node"),
        (plan(address="[fd00::1%x]:80"), "targets[0].address"),
        (plan(via="[fd00::1%$(id)]:80"), "targets[0].via"),
    ],
)
def test_a_probe_plan_holds_only_names_and_addresses_a_run_writes(text: str, where: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_probe_plan(text, "probes/plan.json")
    assert where in one_line(caught.value)


def test_an_outside_vantage_point_keeps_its_host_name() -> None:
    vantage = {"name": "Bastion_1.example.com", "node": None, "spec": "ssh://Bastion_1"}
    parsed = parse_probe_plan(plan(vantage, vantage="Bastion_1.example.com"), "probes/plan.json")
    assert parsed.vantages[0].name == "Bastion_1.example.com"


# --- what a forged Node name does to a run --------------------------------------------------------

SEED = Path(__file__).resolve().parents[3] / "fixtures" / "recorded" / "seed-incidents"


def nodes_json_with_a_forged_name() -> str:
    document = json.loads((SEED / "cluster" / "nodes.json").read_text())
    document["items"][2]["metadata"]["name"] = "-oProxyCommand=x"
    return json.dumps(document)


def test_a_forged_node_name_errors_the_items_that_read_nodes_json_and_goes_nowhere() -> None:
    snapshot = load_snapshot(SEED)
    forged = replace(
        snapshot, cluster={**snapshot.cluster, "nodes.json": nodes_json_with_a_forged_name()}
    )
    facts = Facts.from_snapshot(forged)
    results = [
        run_case(case, facts, DEFAULTS) for check in CATALOGUE for case in cases_for(check, facts)
    ]
    errors = [r for r in results if r.outcome is Outcome.ERROR]
    assert errors
    assert {r.reason for r in errors} == {
        "cannot read cluster/nodes.json: -oProxyCommand=x: metadata.name: not a Kubernetes Node "
        "name, '-oProxyCommand=x': not a DNS subdomain (lowercase letters, digits, '-' and '.')"
    }
    assert not any("-oProxyCommand" in str(r.violations) for r in results)


def test_a_live_run_pairs_no_host_with_a_forged_node_name() -> None:
    assert node_inventory(nodes_json_with_a_forged_name()) == ([], {})
