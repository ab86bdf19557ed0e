"""Managed networks: bridges (pyroute2), dnsmasq, nftables, tunnels, leases, and the host side of nics.

Modules, one concern each:

    schema      network config keys, validation, defaults
    addresses   subnets: parsing, overlap checks, picking free `auto` subnets
    links       the kernel's links, addresses and routes through pyroute2 (blocking; run in threads)
    sysctl      the few /proc/sys/net knobs a bridge needs
    bridge      bring a bridge to match its config (link, MTU, addresses, routes, ports)
    tunnels     vxlan and gre tunnel links from `tunnel.NAME.*` keys
    dnsmasq     dnsmasq's argv and static host entries, and the process that supervises it
    firewall    nftables rule text for networks and nics, applied atomically in tables of our own
    leases      the leases endpoint: dnsmasq's lease file plus static nic addresses
    limits      tc rules for nic `limits.*`
    nics        the host side of container nics: prepare, start, stop, hot add and remove
    networks    the `Networks` collection: create, update, rename, delete, restore (with rollback)

pyroute2 is heavy to import; only `links` imports it, lazily, inside the worker threads.
"""
