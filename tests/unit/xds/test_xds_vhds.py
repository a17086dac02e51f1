"""pyproxy.xds.vhds: assembling route configurations from their VHDS virtual hosts (pure logic), decoding VHDS
resources by resource name, and the glob-aware subscription bookkeeping of pyproxy.xds.state."""
from __future__ import annotations

import pytest

from pyproxy.config import model
from pyproxy.config.decode import ConfigError, decode_any
from pyproxy.xds.state import RDS, XdsState
from pyproxy.xds.vhds import VHDS, Assembler, covered, decode_virtual_hosts, glob, route_config_of, wanted

SOURCE = {"config_source": {"ads": {}, "resource_api_version": "V3"}}


def rc(name: str, *, vhds: bool = True, hosts: tuple = ()) -> model.RouteConfiguration:
    raw = {"@type": RDS, "name": name, "virtual_hosts": [vh_raw(h) for h in hosts]}
    if vhds:
        raw["vhds"] = SOURCE
    return decode_any(raw, "rc")


def vh_raw(host: str, cluster: str = "c") -> dict:
    return {"@type": VHDS, "name": f"{host}:80", "domains": [host, f"{host}:80"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}


def vh(host: str, cluster: str = "c") -> model.VirtualHost:
    return decode_any(vh_raw(host, cluster), "vh")


def hosts(config: model.RouteConfiguration) -> list[tuple[str, str]]:
    return [(v.domains[0], v.routes[0].route.cluster) for v in config.virtual_hosts]


def test_names_and_globs_read_right_to_left():
    assert route_config_of("a/b/reviews") == "a/b" and glob("a/b") == "a/b/*"
    assert covered("80/a", frozenset({"80/*"})) and covered("80/a", ["80/a"]) and not covered("80/a", {"8/*"})
    assert not covered("outbound|80||a", {"*"})  # a wildcard is the caller's business (state.py checks it)
    assert wanted({"80": rc("80"), "inline": rc("inline", vhds=False), "9080": rc("9080")}) == ["80/*", "9080/*"]


def test_a_route_config_gets_its_virtual_hosts_added_changed_and_removed():
    assemble = Assembler()
    rcs = {"80": rc("80")}
    out = assemble(rcs, {"80/a": vh("a"), "80/b": vh("b")}, {"80/*"})
    assert hosts(out["80"]) == [("a", "c"), ("b", "c")] and out["80"].vhds is not None
    out = assemble(rcs, {"80/a": vh("a", "c2"), "80/b": vh("b")}, {"80/*"})  # a changed
    assert hosts(out["80"]) == [("a", "c2"), ("b", "c")]
    out = assemble(rcs, {"80/b": vh("b")}, {"80/*"})  # a removed
    assert hosts(out["80"]) == [("b", "c")]
    # the route configuration's own virtual hosts come first; VHDS's follow, in resource name order
    out = assemble({"80": rc("80", hosts=("z",))}, {"80/y": vh("y"), "80/x": vh("x")}, {"80/*"})
    assert hosts(out["80"]) == [("z", "c"), ("x", "c"), ("y", "c")]


def test_a_virtual_host_before_its_route_config_waits_for_it_and_one_after_joins_it():
    assemble = Assembler()
    vhs = {"80/a": vh("a"), "9080/b": vh("b")}
    assert assemble({}, vhs, {"80/*", "9080/*"}) == {}  # no route configuration yet: nothing to serve
    out = assemble({"80": rc("80")}, vhs, {"80/*", "9080/*"})  # 80 arrives: a joins it; b still waits
    assert list(out) == ["80"] and hosts(out["80"]) == [("a", "c")]
    out = assemble({"80": rc("80"), "9080": rc("9080")}, {**vhs, "9080/c": vh("c")}, {"80/*", "9080/*"})
    assert hosts(out["9080"]) == [("b", "c"), ("c", "c")]


def test_a_route_config_warms_until_vhds_answered_its_glob_and_one_without_vhds_is_as_sent():
    assemble = Assembler()
    inline = rc("inline", vhds=False, hosts=("q",))
    out = assemble({"80": rc("80"), "inline": inline}, {}, set())
    assert list(out) == ["inline"] and out["inline"] is inline  # 80: its listener warms
    out = assemble({"80": rc("80"), "inline": inline}, {}, {"80/*"})  # answered, even with no virtual host
    assert hosts(out["80"]) == []


def test_the_same_inputs_give_the_same_object_so_the_compiled_route_table_is_kept():
    assemble = Assembler()
    rcs, vhs = {"80": rc("80")}, {"80/a": vh("a")}
    first = assemble(rcs, vhs, {"80/*"})["80"]
    assert assemble(rcs, dict(vhs), {"80/*"})["80"] is first  # e.g. an EDS update: routes untouched
    assert assemble(rcs, {"80/a": vh("a")}, {"80/*"})["80"] is not first  # a new virtual host object
    assert assemble({"80": rc("80")}, vhs, {"80/*"})["80"] is not first  # a new route configuration


def resource(name: str, body: dict | None, version: str = "v1") -> dict:
    out = {"name": name, "version": version}
    if body is not None:
        out["resource"] = body
    return out


def test_virtual_hosts_decode_by_resource_name_and_a_bad_one_names_itself():
    decoded, versions = decode_virtual_hosts([resource("80/a", vh_raw("a")), resource("9080/a", vh_raw("a")),
                                              resource("80/unknown", None)])
    assert set(decoded) == {"80/a", "9080/a"} and versions == {"80/a": "v1", "9080/a": "v1"}
    assert decoded["80/a"].name == "a:80"  # its own name is kept (two route configurations hold "a:80")
    bad = {**vh_raw("a"), "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "x"}}]}
    cases = [
        ([resource("80/b", bad)], r"resources\[0\] \(VirtualHost '80/b'\).routes\[0\].route.timeout"),
        ([resource("a", vh_raw("a"))], r"resources\[0\].name: 'a' is not <route configuration>/<host>"),
        ([resource("80/zz", vh_raw("a"))], r"'80/zz': 'zz' is not one of the virtual host's domains"),
        ([resource("80/a", vh_raw("a")), resource("80/a", vh_raw("a"))], "duplicate resource name '80/a'"),
        ([resource("80/a", {**vh_raw("a"), "@type": RDS})], r"resources\[0\].resource.@type"),
        ("x", "expected a list of Resource objects"),
    ]
    for resources, message in cases:
        with pytest.raises(ConfigError, match=message):
            decode_virtual_hosts(resources)


def test_state_keeps_virtual_hosts_under_a_subscribed_glob_and_declares_them_on_a_new_session():
    state = XdsState({"id": "n"}, vhds=True)
    assert VHDS in state.types and VHDS not in XdsState({"id": "n"}).types
    body = state.next_delta_request(VHDS, ["80/*", "9080/*"])
    assert body["resource_names_subscribe"] == ["80/*", "9080/*"]
    state.request_sent(VHDS)
    state.received(VHDS, "n1")
    resources, versions = state.after_delta(VHDS, {"80/a": vh("a"), "9080/b": vh("b")}, {"80/a": "1", "9080/b": "2"},
                                            [])
    state.accepted(VHDS, "v", resources, versions)
    st = state.types[VHDS]
    assert st.answered == {"80/*", "9080/*"}
    body = state.next_delta_request(VHDS, ["80/*"])  # 9080 left RDS
    assert body["resource_names_unsubscribe"] == ["9080/*"]
    state.request_sent(VHDS)
    assert set(st.resources) == {"80/a"} and st.versions == {"80/a": "1"} and st.answered == {"80/*"}
    state.reset(VHDS)  # a new session (the control plane restarted): declare what is held under the globs
    body = state.next_delta_request(VHDS, ["80/*"])
    assert body["initial_resource_versions"] == {"80/a": "1"} and "response_nonce" not in body
    assert st.answered == {"80/*"}  # still served meanwhile


def test_xds_state_holds_leds_only_for_a_client_that_uses_it():
    from pyproxy.xds.state import LEDS

    assert LEDS in XdsState({"id": "n"}, leds=True).types and LEDS not in XdsState({"id": "n"}).types
