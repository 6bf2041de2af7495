import jinja2
import pytest

from tui.lab import render
from tui.lab.model import LabSpec, pair_key


def secrets_for(spec):
    return {pair_key(a.name, b.name): "ab" * 32 for a in spec.node_list() for b in spec.node_list() if a.index < b.index}


@pytest.mark.parametrize("datapath", render.DATAPATHS)
def test_every_node_file_renders(datapath):
    spec = LabSpec.build("lab", 3)
    files = render.render_lab(spec, datapath=datapath, secrets=secrets_for(spec))
    assert set(files) == {"kube-node1", "kube-node2", "kube-node3"}
    n1 = files["kube-node1"]
    assert n1["swanctl.conf"].mode == 0o600
    sw = n1["swanctl.conf"].content
    assert "mesh-left {" in sw and "remote_addrs = 192.168.56.12" in sw
    assert "start_action = start" in sw and "close_action = start" in sw and "dpd_action = restart" in sw
    assert "keyingtries = 0" in sw
    assert ("if_id_in = 2" in sw) == (datapath == "kernel-xfrm")
    boot = n1["node-boot.sh"].content
    assert boot.index("cni0") < boot.index("iptables")
    assert "ip route replace unreachable 10.128.0.0/16" in boot
    assert "iptables -w -P FORWARD DROP" in boot
    conf = n1["10-ipsec-lab.conflist"].content
    assert '"dataDir": "/run/cni/networks"' in conf and '"subnet": "10.128.1.0/24"' in conf
    assert ("kernel-libipsec" in n1["strongswan.conf"].content) == (datapath == "kernel-libipsec")


def test_templates_are_strict():
    env = render.environment()
    with pytest.raises(jinja2.UndefinedError):
        env.get_template("swanctl.conf.j2").render({})


def test_unknown_datapath_is_refused():
    spec = LabSpec.build("lab", 2)
    with pytest.raises(Exception, match="unknown data path"):
        render.render_lab(spec, datapath="vti", secrets=secrets_for(spec))
