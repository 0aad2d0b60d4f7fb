"""nft parsers: `nft -j list table` and `nft list table` read to one model, on the kernel's output.

Rulesets shaped like kube-proxy's (tests/unit/parse/data/*.nft: the endpoint-chain layout, the
DNAT-map layout with hairpin-connections, an ip6 table) are loaded into the host kernel in a
network namespace of their own and listed back each way; the listings recorded beside them keep
the tests running where that cannot be done (not root), and are re-recorded and compared where
it can.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from bench import synth
from tests.nft_kernel import (
    DATA,
    LISTINGS,
    RULESETS,
    in_namespace,
    list_table,
    require_kernel_nft,
)
from vipcheck.model.nftables import NftElement, NftFamily, NftRule, NftTable
from vipcheck.parse import ParseError, nft
from vipcheck.parse.nft import parse_nft_json, parse_nft_text


def parse(suffix: str, text: str, path: str = "nft") -> NftTable:
    return parse_nft_json(text, path) if suffix == ".json" else parse_nft_text(text, path)


def placeless(table: NftTable, handles: bool = True) -> NftTable:
    """The table without where each object was read (a JSON object's position is not a text
    line), and without rule handles unless both listings show them."""
    chains = {
        name: dataclasses.replace(
            chain,
            line=0,
            rules=tuple(
                dataclasses.replace(rule, line=0, handle=rule.handle if handles else None)
                for rule in chain.rules
            ),
        )
        for name, chain in table.chains.items()
    }
    sets = {name: dataclasses.replace(s, line=0) for name, s in table.sets.items()}
    return dataclasses.replace(table, chains=chains, sets=sets)


def recorded(name: str) -> dict[str, NftTable]:
    return {
        suffix: parse(suffix, (DATA / f"{name}{suffix}").read_text(), f"{name}{suffix}")
        for suffix in LISTINGS
    }


def assert_forms_equal(tables: dict[str, NftTable]) -> None:
    """JSON and `nft -a` text give the same table, handles included; plain text the same
    without handles (it shows none)."""
    assert placeless(tables[".json"]) == placeless(tables[".a.txt"])
    assert placeless(tables[".json"], handles=False) == placeless(tables[".txt"])
    assert all(rule.handle is None for c in tables[".txt"].chains.values() for rule in c.rules)


@pytest.mark.parametrize("name", RULESETS)
def test_recorded_listings_parse_equal(name: str) -> None:
    assert_forms_equal(recorded(name))


@pytest.mark.parametrize("name", RULESETS)
def test_kernel_listings_parse_equal_and_match_the_recording(name: str) -> None:
    """Loaded into the kernel now: both forms agree, and agree with what was recorded (a newer
    nft printing differently would show here first)."""
    listings = list_table((DATA / f"{name}.nft").read_text(), RULESETS[name])
    tables = {suffix: parse(suffix, text, name + suffix) for suffix, text in listings.items()}
    assert_forms_equal(tables)
    assert tables == recorded(name)


def test_endpoint_chain_layout_fields() -> None:
    table = recorded("endpoint-chains")[".json"]
    assert (table.family, table.name) == (NftFamily.IP, "kube-proxy")
    service = table.chains["service-42NFTM6N-ns2/svc2/tcp/p80"]
    assert [rule.text for rule in service.rules] == [
        "ip daddr 172.30.0.42 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
        "ip saddr @affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 "
        "goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80",
        "ip saddr @affinity-ZCYGN2UV-ns2/svc2/tcp/p80__10.180.0.3/80 "
        "goto endpoint-ZCYGN2UV-ns2/svc2/tcp/p80__10.180.0.3/80",
        "numgen random mod 2 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80, "
        "1 : goto endpoint-ZCYGN2UV-ns2/svc2/tcp/p80__10.180.0.3/80 }",
    ]
    endpoint = table.chains["endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"]
    assert [rule.text for rule in endpoint.rules][1:] == [
        "update @affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 { ip saddr }",
        "meta l4proto tcp dnat to 10.180.0.2:80",
    ]
    external = table.chains["external-42NFTM6N-ns2/svc2/tcp/p80"].rules
    assert (external[1].text, external[1].comment) == (
        "fib saddr type local jump mark-for-masquerade",
        "masquerade local traffic",
    )
    assert str(external[1]) == (
        'fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"'
    )
    mark = table.chains["mark-for-masquerade"].rules[0].text
    assert mark == "meta mark set meta mark | 0x00004000"
    assert (
        table.chains["masquerading"].rules[0].text == "meta mark & 0x00004000 == 0x00000000 return"
    )
    assert table.chains["firewall-42NFTM6N-ns2/svc2/tcp/p80"].rules[0].text == (
        "ip saddr != { 198.51.100.7, 203.0.113.0/25 } drop"
    )
    prerouting = table.chains["filter-prerouting"]
    assert (prerouting.hook, prerouting.chain_type, prerouting.priority) == (
        "prerouting",
        "filter",
        -110,
    )
    assert table.chains["nat-postrouting"].priority == 100
    assert table.chains["services"].hook is None

    no_endpoints = table.sets["no-endpoint-services"]
    assert no_endpoints.is_map
    assert no_endpoints.value_type == ("verdict",)
    assert no_endpoints.key_type == ("ipv4_addr", "inet_proto", "inet_service")
    assert (
        NftElement(("172.30.0.43", "udp", "53"), "goto reject-chain", "ns3/svc3:dns")
        in no_endpoints.elements
    )
    affinity = table.sets["affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"]
    assert (affinity.flags, affinity.timeout, affinity.is_map) == (
        frozenset({"timeout"}),
        10800,
        False,
    )
    assert table.sets["nodeport-ips"].elements == (NftElement(("192.168.0.2",)),)


def test_dnat_map_layout_fields() -> None:
    table = recorded("dnat-maps")[".txt"]
    assert table.chains["service-ULMVA6XW-ns1/svc1/tcp/p80"].rules == (
        NftRule(
            "meta l4proto tcp dnat ip to numgen random mod 2 map "
            "{ 0 : 10.180.0.1 . 80, 1 : 10.180.1.5 . 80 }",
            line=table.chains["service-ULMVA6XW-ns1/svc1/tcp/p80"].rules[0].line,
        ),
    )
    hairpin = table.sets["hairpin-connections"]
    assert hairpin.key_type == ("ipv4_addr", "ipv4_addr", "inet_proto", "inet_service")
    assert hairpin.elements[0] == NftElement(("10.180.0.1", "10.180.0.1", "tcp", "80"))
    assert [rule.text for rule in table.chains["masquerading"].rules] == [
        "meta mark & 0x00004000 != 0x00000000 meta mark set meta mark ^ 0x00004000 "
        "masquerade fully-random",
        "ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections "
        "masquerade fully-random",
    ]
    assert table.chains["filter-prerouting-pre-dnat"].priority == -110
    assert table.chains["filter-input"].priority == 0
    # an affinity entry the kernel added: its countdown (`expires`) is not part of the model
    affinity = table.sets["affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"]
    assert affinity.elements == (NftElement(("10.0.3.9",)),)


def test_ip6_table_fields() -> None:
    table = recorded("ip6")[".a.txt"]
    assert table.family is NftFamily.IP6
    endpoint = table.chains["endpoint-2NGEHG2B-ns1/svc1/tcp/p80__fd00.10.180..1/80"]
    assert endpoint.rules[1].text == "meta l4proto tcp dnat to [fd00:10:180::1]:80"
    assert endpoint.rules[1].handle == 26
    assert table.chains["reject-chain"].rules[0].text == "reject"
    assert (
        NftElement(("fd00:30::42", "sctp", "9000"), "goto reject-chain", "ns2/svc2:p9000")
        in table.sets["no-endpoint-services"].elements
    )


# Statements kube-proxy does not write but nft may list in its table, each rendered from JSON
# exactly as the kernel's text listing shows it.
OTHER_STATEMENTS = """\
add table ip kube-proxy
add counter ip kube-proxy packets-seen
add set ip kube-proxy ranges { type ipv4_addr ; flags interval ; }
add set ip kube-proxy timed { type ipv4_addr ; flags timeout ; }
add chain ip kube-proxy other
add rule ip kube-proxy other counter
add rule ip kube-proxy other counter name packets-seen
add rule ip kube-proxy other log prefix "kube proxy" level info
add rule ip kube-proxy other reject with icmp host-unreachable
add rule ip kube-proxy other meta l4proto tcp reject with tcp reset
add rule ip kube-proxy other ip protocol tcp ct mark 0x10 accept
add rule ip kube-proxy other ct mark set 0x10
add rule ip kube-proxy other tcp dport { 80, 443 } accept
add rule ip kube-proxy other tcp dport 1000-2000 accept
add rule ip kube-proxy other update @timed { ip saddr timeout 1d2h3m4s }
add rule ip kube-proxy other iifname "eth0" oif "lo" accept
add rule ip kube-proxy other ct state established,related accept
add rule ip kube-proxy other fib saddr . iif oif missing drop
add rule ip kube-proxy other ct original ip daddr 1.2.3.4 accept
add rule ip kube-proxy other numgen inc mod 2 offset 5 vmap { 5 : accept, 6 : drop }
add rule ip kube-proxy other masquerade
add rule ip kube-proxy other dnat to 10.0.0.1
add rule ip kube-proxy other tcp flags syn / syn,ack accept
add rule ip kube-proxy other ip saddr 10.0.0.1 comment "a # and a { in a comment"
add element ip kube-proxy ranges { 10.0.0.0/8, 192.168.1.1-192.168.1.9 }
add element ip kube-proxy timed { 1.1.1.1 timeout 1h comment "c" }
"""


def test_other_statements_render_as_nft_lists_them() -> None:
    listings = list_table(OTHER_STATEMENTS, "ip")
    tables = {suffix: parse(suffix, text) for suffix, text in listings.items()}
    assert_forms_equal(tables)
    table = tables[".json"]
    assert len(table.chains["other"].rules) == OTHER_STATEMENTS.count("add rule")
    assert table.sets["timed"].elements == (NftElement(("1.1.1.1",), None, "c", 3600),)
    assert table.sets["ranges"].elements == (
        NftElement(("10.0.0.0/8",)),
        NftElement(("192.168.1.1-192.168.1.9",)),
    )


def test_a_pasted_listing_reads_as_the_listing() -> None:
    """Tabs expanded, `# handle N` kept, a prompt and the command line around it, blank lines
    doubled, runs of spaces: the same table as nft's own output."""
    listing = (DATA / "endpoint-chains.a.txt").read_text()
    pasted = "root@node-2:~# nft -a list table ip kube-proxy\n"
    pasted += listing.expandtabs(4).replace("\n\n", "\n\n\n").replace(" jump ", "  jump ")
    pasted += "root@node-2:~#\n"
    assert placeless(parse_nft_text(pasted, "p")) == placeless(recorded("endpoint-chains")[".json"])


def test_an_element_list_cut_by_hand_keeps_what_is_shown() -> None:
    listing = (DATA / "endpoint-chains.txt").read_text()
    lines = listing.splitlines()
    start = next(i for i, line in enumerate(lines) if "elements = { 1.2.3.4 . tcp . 80 :" in line)
    # the list's last line (with its `}`) removed: the map's own `}` ends it
    del lines[start + 3]
    table = parse_nft_text("\n".join(lines), "p")
    assert [e.key[0] for e in table.sets["service-ips"].elements] == [
        "1.2.3.4",
        "192.168.99.22",
        "172.30.0.41",
    ]
    assert table.partial == f"the element list at line {start + 1} has no `}}`: cut by hand"
    assert recorded("endpoint-chains")[".txt"].partial is None


def test_a_gap_marked_by_hand_makes_the_table_partial() -> None:
    lines = (DATA / "endpoint-chains.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "elements = { 1.2.3.4 . tcp . 80 :" in line)
    lines[start + 1] = "\t\t\t     ..."
    table = parse_nft_text("\n".join(lines), "p")
    assert len(table.sets["service-ips"].elements) == 3
    assert table.partial == f"a gap (`...`) at line {start + 2}"


def test_lines_name_the_rule_where_it_was_read() -> None:
    text = (DATA / "ip6.txt").read_text()
    table = parse_nft_text(text, "p")
    rule = table.chains["service-UZ3OQSUH-ns1/svc1/tcp/p80"].rules[0]
    assert text.splitlines()[rule.line - 1].strip() == rule.text
    as_json = parse_nft_json((DATA / "ip6.json").read_text(), "p")
    position = as_json.chains["service-UZ3OQSUH-ns1/svc1/tcp/p80"].rules[0].line
    objects = json.loads((DATA / "ip6.json").read_text())["nftables"]
    assert objects[position - 1]["rule"]["chain"] == "service-UZ3OQSUH-ns1/svc1/tcp/p80"


def json_with(rule_expr: list[object], *, table: str = "kube-proxy") -> str:
    return json.dumps(
        {
            "nftables": [
                {"metainfo": {"json_schema_version": 1}},
                {"table": {"family": "ip", "name": table, "handle": 1}},
                {"chain": {"family": "ip", "table": table, "name": "c", "handle": 2}},
                {
                    "rule": {
                        "family": "ip",
                        "table": table,
                        "chain": "c",
                        "handle": 7,
                        "expr": rule_expr,
                    }
                },
            ]
        }
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (json_with([{"queue": {"num": 1}}]), "rule 7 of chain c: cannot read expression"),
        (
            json_with([{"dnat": {"addr": "10.0.0.1", "port": 80, "secret": 1}}]),
            "field 'secret'",
        ),
        (json_with([{"match": {"op": "==", "left": {"osf": {}}, "right": 1}}]), "osf"),
        (json_with([{"accept": None}], table="filter"), "table ip filter is not kube-proxy's"),
        ('{"nftables": [{"table": {"family": "ip", "name": "kube-pro', "invalid JSON"),
        ('{"ruleset": []}', 'expected `{"nftables": [...]}`'),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (
            json_with([{"accept": None}]).replace('"ip"', '"inet"'),
            "table inet kube-proxy is not kube-proxy's",
        ),
        (
            json_with([{"accept": None}]).replace('"handle": 7', '"comment": "a\\u001b[2Jb"'),
            "comment 'a\\x1b[2Jb' holds control characters",
        ),
        (json_with([{"accept": None}]).replace('"c"', '"c\\nd"'), "not a name"),
        ('{"nftables": [{"metainfo": {}}]}', "no `table ip kube-proxy`"),
    ],
)
def test_bad_json_is_a_parse_error_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_nft_json(text, "nodes/n1/nft-ip-kube-proxy.json")
    assert str(raised.value).startswith("nodes/n1/nft-ip-kube-proxy.json")
    assert message in str(raised.value)


def test_huge_numbers_in_json_are_rendered_or_refused_never_a_traceback() -> None:
    big = 10**4000
    with pytest.raises(ParseError, match="cannot read"):
        parse_nft_json(
            '{"nftables": [{"table": {"family": "ip", "name": "kube-proxy"}}, '
            '{"set": {"family": "ip", "table": "kube-proxy", "name": "s", "type": "ipv4_addr", '
            f'"timeout": {big}}}}}]}}',
            "f.json",
        )


TEXT = """\
table ip kube-proxy {
\tchain c {
\t\tip daddr 10.0.0.1 accept
\t}
}
"""


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (TEXT.replace("kube-proxy", "filter"), 1, "table ip filter is not kube-proxy's"),
        (TEXT + TEXT.replace("ip kube", "ip6 kube"), 6, "a second table"),
        (TEXT.replace("table ip", "table inet"), 1, "table inet kube-proxy is not"),
        (TEXT.replace("accept", 'accept comment "x\x1b]0;pwn\x07"'), 3, "control characters"),
        (TEXT[: TEXT.index("\t}")], 3, "ends inside chain c: cut off?"),
        (TEXT.replace("chain c", "chain c$(reboot)"), 2, "not a name"),
        (
            TEXT.replace("\t\tip", "\t\ttype nat hook output priority 9" + "9" * 40 + ";\n\t\tip"),
            3,
            "expected a chain priority",
        ),
        (
            TEXT.replace(
                "chain c {", "set s {\n\ttype ipv4_addr\n\ttimeout 99999999999999d\n}\nchain c {"
            ),
            4,
            "expected a time",
        ),
        ("hello\n" + TEXT, 1, "expected `table ip kube-proxy {`"),
        (
            TEXT.replace("chain c {", "set s {\n\tflags interval\n}\nchain c {"),
            2,
            "expected its `type`",
        ),
        (
            TEXT.replace("\t\tip daddr", "\t\twhatever\n\t}\n\tbogus\n\tchain d {\n\t\tip"),
            5,
            "expected a set",
        ),
    ],
)
def test_bad_text_is_a_parse_error_naming_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        parse_nft_text(text, "nodes/n1/nft-ip-kube-proxy.txt")
    assert raised.value.line == line
    assert str(raised.value).startswith(f"nodes/n1/nft-ip-kube-proxy.txt:{line}: ")
    assert message in str(raised.value)


def test_a_kernel_listing_with_other_tables_names_the_other_one() -> None:
    """`nft list ruleset` pasted instead of the one table: refused naming the first other."""
    ruleset = (DATA / "ip6.nft").read_text() + "add table inet filter\n"
    listing = in_namespace(ruleset, "nft list ruleset")
    with pytest.raises(ParseError, match="table inet filter is not kube-proxy's"):
        parse_nft_text(listing, "nft.txt")
    listing = in_namespace(ruleset, "nft -j list ruleset")
    with pytest.raises(ParseError, match="table inet filter is not kube-proxy's"):
        parse_nft_json(listing, "nft.json")


@pytest.mark.parametrize("name", RULESETS)
def test_a_host_without_etc_protocols_reads_the_same(name: str) -> None:
    """nft names protocols from /etc/protocols; without it (minimal hosts, the lab's guest) it
    prints `meta l4proto 6` and `10.96.0.10 . 6 . 53`. Listed by the kernel with the file hidden
    (an empty one bound over it, in a mount namespace of its own), both forms read as with it."""
    require_kernel_nft()
    ruleset = (DATA / f"{name}.nft").read_text()
    family = RULESETS[name]
    script = (
        f"mount --bind /dev/null /etc/protocols && nft -j list table {family} kube-proxy "
        f"&& printf '\\n===text\\n' && nft list table {family} kube-proxy"
    )
    load_then_run = 'printf "%s" "$0" | nft -f - && eval "$1"'
    result = subprocess.run(
        ["unshare", "-n", "-m", "sh", "-c", load_then_run, ruleset, script],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    listed_json, _, listed_text = result.stdout.partition("\n===text\n")
    assert " 6 " in listed_text or "l4proto 6" in listed_text  # the numbers this is about
    numbered = {".json": listed_json, ".txt": listed_text}
    tables = {suffix: parse(suffix, text, name + suffix) for suffix, text in numbered.items()}
    assert placeless(tables[".txt"]) == placeless(recorded(name)[".txt"])
    assert placeless(tables[".json"]) == placeless(recorded(name)[".json"])


def test_two_nodes_tables_share_what_is_equal_and_only_that() -> None:
    """Every node's table repeats most of the others': equal chains, sets and elements read
    from two listings are one object (what the trace memo and the judges compare by identity),
    and a chain or set that differs is its own."""
    name = next(iter(RULESETS))
    text = (DATA / f"{name}.json").read_text()
    first, second = parse_nft_json(text, "a.json"), parse_nft_json(text, "b.json")
    assert first is not second
    assert all(second.chains[c] is chain for c, chain in first.chains.items())
    assert all(second.sets[s] is found for s, found in first.sets.items())
    document = json.loads(text)
    rules = [item["rule"] for item in document["nftables"] if "rule" in item]
    rules[-1]["expr"] = [{"accept": None}]  # the last rule of its chain, changed on one node
    changed = parse_nft_json(json.dumps(document), "c.json")
    chain = rules[-1]["chain"]
    assert changed.chains[chain] is not first.chains[chain]
    assert changed.chains[chain].rules[-1].text == "accept"
    assert first.chains[chain].rules[-1].text != "accept"
    others = [c for c in first.chains if c != chain]
    assert all(changed.chains[c] is first.chains[c] for c in others)


def read_whole(text: str, path: str) -> NftTable:
    """The listing read as the standard library decodes it, the way taken when reading by parts
    cannot be (parse_nft_json's docstring)."""
    return nft._read_objects(json.loads(text), path)


def synthetic_listing() -> str:
    """A bench node's table (kube-proxy 1.36's layout, 40 Services, the nftables faults):
    NodePorts, affinity, every kind of map element."""
    shape = synth.Shape(nodes=2, services=40, mode=synth.Mode.NFTABLES)
    return synth.nftables_table(synth._cluster(shape), 0).listing()


@pytest.mark.parametrize("name", [*RULESETS, "synthetic"])
def test_reading_by_parts_gives_the_table_read_whole(name: str) -> None:
    text = synthetic_listing() if name == "synthetic" else (DATA / f"{name}.json").read_text()
    assert nft._by_parts(text, "n.json") == read_whole(text, "n.json")  # by parts, not whole
    # Spelled differently (spaces, key order): the same table, by the same path.
    document = json.loads(text)
    respelled = json.dumps(document, indent=1, sort_keys=True)
    assert parse_nft_json(respelled, "n.json") == parse_nft_json(text, "n.json")


def test_a_set_changed_on_one_node_is_read_changed() -> None:
    """Elements are kept by their JSON text: a map that differs by one element on one node is
    its own, and a map of the same text is the one read before."""
    text = (DATA / "dnat-maps.json").read_text()
    first = parse_nft_json(text, "a.json")
    document = json.loads(text)
    kept = next(item["map"] for item in document["nftables"] if item.get("map", {}).get("elem"))
    kept["elem"] = kept["elem"][1:]
    changed = parse_nft_json(json.dumps(document), "b.json")
    assert changed.sets[kept["name"]].elements == first.sets[kept["name"]].elements[1:]
    assert parse_nft_json(text, "c.json").sets[kept["name"]] is first.sets[kept["name"]]


def test_what_reading_by_parts_refuses_is_read_whole() -> None:
    """NaN is JSON only to the standard library: such a listing is read whole, and its error is
    the one reported."""
    text = json_with([{"accept": None}]).replace('"handle": 7', '"handle": NaN')
    with pytest.raises(nft._NotByParts):
        nft._by_parts(text, "n.json")
    with pytest.raises(ParseError, match="rule nan of chain c: expected an integer handle"):
        parse_nft_json(text, "n.json")


def test_a_key_given_twice_counts_once_either_way() -> None:
    text = json_with([{"accept": None}]).replace('"handle": 7', '"handle": 8, "handle": 7')
    assert nft._by_parts(text, "n.json") == read_whole(text, "n.json")
    assert parse_nft_json(text, "n.json").chains["c"].rules[0].handle == 7
