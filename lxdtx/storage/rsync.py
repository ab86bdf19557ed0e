# -*- test-case-name: tests.integration.test_migration_rsync,tests.integration.test_storage -*-
"""rsync command lines for copying volume contents (same host, any drivers)."""

# 24: source files vanished while rsync ran (a running container's temp files);
# what was there at the end is copied, as a snapshot of a running container should be.
SUCCESS = (0, 24)


def argv(source, target, bwlimit_kib=0, delete=True, exact=False):
    """Copy the *contents* of `source` into `target`, keeping owners, modes, links, ACLs, xattrs.

    `--numeric-ids` keeps shifted container ids as they are; `--delete` makes
    the target an exact copy (restores); `-x` stays on one filesystem.

    Into an empty target every file is sent, and rsync checks each with its
    whole-file checksum. Into a filled one (`exact`: a restore) its quick check
    would keep a file of the same size and mtime as the source's, however
    different: `--checksum` compares contents instead, reading both trees but
    writing only what differs.
    """
    args = ["rsync", "-a", "-H", "-A", "-X", "-S", "-x", "--numeric-ids"]
    if delete:
        args.append("--delete")
    if exact:
        args.append("--checksum")
    if bwlimit_kib:
        args.append(f"--bwlimit={bwlimit_kib}")
    args += [source.rstrip("/") + "/", target.rstrip("/") + "/"]
    return args
