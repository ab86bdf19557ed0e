# -*- test-case-name: tests.unit.test_storage -*-
"""rsync command lines for copying volume contents (same host, any drivers)."""


def argv(source, target, bwlimit_kib=0, delete=True):
    """Copy the *contents* of `source` into `target`, keeping owners, modes, links, ACLs, xattrs.

    `--numeric-ids` keeps shifted container ids as they are; `--delete` makes
    the target an exact copy (restores); `-x` stays on one filesystem.
    """
    args = ["rsync", "-a", "-H", "-A", "-X", "-S", "-x", "--numeric-ids"]
    if delete:
        args.append("--delete")
    if bwlimit_kib:
        args.append(f"--bwlimit={bwlimit_kib}")
    args += [source.rstrip("/") + "/", target.rstrip("/") + "/"]
    return args
