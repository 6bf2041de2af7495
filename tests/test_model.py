import pytest

from tui.lab.errors import UsageError
from tui.lab.model import LabSpec


def test_three_nodes_follow_the_seed():
    spec = LabSpec.build("lab", 3)
    assert [n.name for n in spec.node_list()] == ["kube-node1", "kube-node2", "kube-node3"]
    assert str(spec.node(3).pod_cidr) == "10.128.3.0/24"
    assert str(spec.node(2).cni0_ip) == "10.128.2.1"
    names = {(t.node, t.name): t.peer for t in spec.tunnels()}
    assert names == {
        ("kube-node1", "mesh-left"): "kube-node2",
        ("kube-node1", "mesh-right"): "kube-node3",
        ("kube-node2", "mesh-left"): "kube-node1",
        ("kube-node2", "mesh-right"): "kube-node3",
        ("kube-node3", "mesh-left"): "kube-node1",
        ("kube-node3", "mesh-right"): "kube-node2",
    }


def test_above_three_nodes_tunnels_are_named_after_the_peer():
    spec = LabSpec.build("lab", 5)
    assert len(spec.tunnels()) == 5 * 4
    assert {t.name for t in spec.tunnels_of("kube-node5")} == {f"mesh-kube-node{i}" for i in range(1, 5)}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nodes": 1}, "between 2 and 32"),
        ({"nodes": 33}, "between 2 and 32"),
        ({"underlay": "192.168.56.0/33"}, "malformed underlay"),
        ({"underlay": "192.168.56.1/24"}, "malformed underlay"),
        ({"pod_supernet": "10.128.0.0/25"}, "cannot hold"),
        ({"underlay": "10.128.0.0/24"}, "overlaps"),
        ({"name": "Bad_Name"}, "invalid lab name"),
        ({"name": "a-b"}, "invalid lab name"),
    ],
)
def test_bad_specs_are_refused_with_one_line(kwargs, message):
    with pytest.raises(UsageError) as exc:
        LabSpec.build(**kwargs)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_node_and_connection():
    spec = LabSpec.build("lab", 3)
    with pytest.raises(UsageError, match="unknown node 'kube-node7'"):
        spec.node("kube-node7")
    with pytest.raises(UsageError, match="unknown connection 'mesh-up' on kube-node1"):
        spec.tunnel("kube-node1", "mesh-up")


def test_spec_round_trips():
    spec = LabSpec.build("x1", 4, "192.168.60.0/24", "10.200.0.0/16")
    assert LabSpec.from_dict(spec.to_dict()) == spec
