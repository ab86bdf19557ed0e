"""API extensions: the full list of this API level, and the ones that work here.

`GET /1.0` advertises an extension only once its feature works and is tested;
add its name to IMPLEMENTED in the change that makes it so.
"""

ALL = [
    "storage_zfs_remove_snapshots", "container_host_shutdown_timeout", "container_stop_priority",
    "container_syscall_filtering", "auth_pki", "container_last_used_at", "etag", "patch",
    "usb_devices", "https_allowed_credentials", "image_compression_algorithm",
    "directory_manipulation", "container_cpu_time", "storage_zfs_use_refquota",
    "storage_lvm_mount_options", "network", "profile_usedby", "container_push",
    "container_exec_recording", "certificate_update", "container_exec_signal_handling",
    "gpu_devices", "container_image_properties", "migration_progress", "id_map",
    "network_firewall_filtering", "network_routes", "storage", "file_delete", "file_append",
    "network_dhcp_expiry", "storage_lvm_vg_rename", "storage_lvm_thinpool_rename", "network_vlan",
    "image_create_aliases", "container_stateless_copy", "container_only_migration",
    "storage_zfs_clone_copy", "unix_device_rename", "storage_lvm_use_thinpool",
    "storage_rsync_bwlimit", "network_vxlan_interface", "storage_btrfs_mount_options",
    "entity_description", "image_force_refresh", "storage_lvm_lv_resizing", "id_map_base",
    "file_symlinks", "container_push_target", "network_vlan_physical", "storage_images_delete",
    "container_edit_metadata", "container_snapshot_stateful_migration", "storage_driver_ceph",
    "storage_ceph_user_name", "resource_limits", "storage_volatile_initial_source",
    "storage_ceph_force_osd_reuse", "storage_block_filesystem_btrfs", "resources",
    "kernel_limits", "storage_api_volume_rename", "macaroon_authentication", "network_sriov",
    "console", "restrict_devlxd", "migration_pre_copy", "infiniband", "maas_network",
    "devlxd_events", "proxy", "network_dhcp_gateway", "file_get_symlink", "network_leases",
    "unix_device_hotplug", "storage_api_local_volume_handling", "operation_description",
    "clustering", "event_lifecycle", "storage_api_remote_volume_handling", "nvidia_runtime",
    "container_mount_propagation", "container_backup", "devlxd_images",
    "container_local_cross_pool_handling", "proxy_unix",
    # Not part of this API level, but `lxc list` (5.0.2) refuses to run without it.
    "api_filtering",
    # Not part of this API level either: with it `lxc list` asks for everything in one request.
    "container_full",
    # Not part of this API level either: without it `lxc move c -s pool` (5.0.2) copies the
    # container onto its own name and then deletes it; with it the client asks for a move.
    "instance_pool_move",
]

IMPLEMENTED = {
    "auth_pki", "etag", "patch", "https_allowed_credentials", "profile_usedby",
    "certificate_update", "entity_description", "resources", "operation_description",
    "event_lifecycle", "image_create_aliases", "image_compression_algorithm", "api_filtering",
    # images from other servers and simplestreams indexes, refreshed on demand and in the background
    "image_force_refresh",
    # managed networks and nics; vlan, sriov and infiniband are unit-tested and need kernel
    # features or hardware this host lacks (802.1Q, SR-IOV NICs, InfiniBand HCAs, a MAAS server).
    "network", "network_leases", "network_firewall_filtering", "network_routes", "network_dhcp_expiry",
    "network_dhcp_gateway", "network_vxlan_interface", "network_vlan", "network_vlan_physical",
    "network_sriov", "infiniband", "maas_network",
    "container_backup", "container_full", "container_edit_metadata",
    # devices: proxy (tcp, unix and abstract sockets, either side listening, live)
    "proxy", "proxy_unix",
    # /dev/lxd: the guest API, its events and image downloads
    "restrict_devlxd", "devlxd_events", "devlxd_images",
    # unix-char/unix-block: source and path apart, live add/remove, hotplug of devices not required
    "unix_device_rename", "unix_device_hotplug",
    # disk: host paths live and at start, with mount propagation modes
    "container_mount_propagation",
    # usb and gpu: host nodes found in sysfs passed in, usb hotplug from uevents; tested against
    # fake sysfs trees (this host has neither USB nor GPUs)
    "usb_devices", "gpu_devices",
    # containers: lifecycle, limits, security, id maps, shutdown order
    "container_host_shutdown_timeout", "container_stop_priority", "container_syscall_filtering",
    "container_last_used_at", "container_cpu_time", "container_image_properties", "id_map",
    "id_map_base", "resource_limits", "kernel_limits", "nvidia_runtime",
    # storage (pools, volumes, snapshots, copies): dir and btrfs run here, lvm/zfs/ceph are
    # unit-tested and need kernel features this host lacks.
    "storage", "storage_api_volume_rename", "storage_api_local_volume_handling", "storage_images_delete",
    "storage_volatile_initial_source", "storage_btrfs_mount_options", "storage_rsync_bwlimit",
    "container_local_cross_pool_handling", "instance_pool_move",
    # lvm, zfs and ceph: implemented, validation and commands unit-tested; this host's kernel
    # has no device-mapper, zfs or rbd, so their integration tests skip here.
    "storage_zfs_remove_snapshots", "storage_zfs_use_refquota", "storage_zfs_clone_copy",
    "storage_lvm_mount_options", "storage_lvm_vg_rename", "storage_lvm_thinpool_rename",
    "storage_lvm_use_thinpool", "storage_lvm_lv_resizing", "storage_block_filesystem_btrfs",
    "storage_driver_ceph", "storage_ceph_user_name", "storage_ceph_force_osd_reuse",
    # exec, console and the file API
    "container_exec_recording", "container_exec_signal_handling", "console", "directory_manipulation",
    "file_delete", "file_append", "file_symlinks", "file_get_symlink",
    # migration between daemons: pull, push and relay, stateless, rsync over the fs websocket
    "container_stateless_copy", "container_only_migration", "container_push", "container_push_target",
    "migration_progress", "storage_api_remote_volume_handling",
    # Candid logins over HTTPS (core.macaroon.endpoint), against a test Candid with the real lxc client
    "macaroon_authentication",
    # live migration with CRIU; stateful snapshots go along with their dumps (test_migration_live)
    "container_snapshot_stateful_migration",
    # pre-copy rounds of a live migration: the rounds' logic and messages are unit-tested, and a
    # live move asking for it works here as one final dump; the pre-dumps need a kernel that
    # tracks dirty pages (soft-dirty), which this host's lacks, so their integration test skips.
    "migration_pre_copy",
    # clusters on etcd: /1.0/cluster, members, target, forwarding, per-member pools, moves
    # between members (test_cluster_join, test_cluster_containers, test_cluster_members)
    "clustering",
}


def advertised():
    """The `api_extensions` list of `GET /1.0`, in the order of the API level."""
    return [name for name in ALL if name in IMPLEMENTED]
