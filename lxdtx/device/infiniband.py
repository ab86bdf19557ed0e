"""`infiniband` devices: validation of their keys."""

from lxdtx.config.schema import ConfigError
from lxdtx.device.keys import check_keys
from lxdtx.device.nic import KEYS as NIC_KEYS

KEYS = {k: NIC_KEYS[k] for k in ("nictype", "parent", "name", "hwaddr", "mtu")}


def validate(name, config):
    nictype = config.get("nictype", "")
    if nictype not in ("physical", "sriov"):
        raise ConfigError([(name, f"Bad nic type: {nictype}")])
    check_keys("infiniband", name, config, KEYS)
    if not config.get("parent"):
        raise ConfigError([(name, f"Missing parent for {nictype} type nic")])
