/*
 * predump: the CRIU dumps of a pre-copy live migration, through liblxc's
 * migrate API (lxc-checkpoint has no pre-dump and no parent images).
 *
 *     predump NAME LXCPATH pre-dump DIRECTORY [PARENT]
 *     predump NAME LXCPATH dump DIRECTORY PARENT
 *
 * `pre-dump` writes the container's memory into DIRECTORY while it runs on,
 * and has the kernel track which pages it dirties from then on; `dump` is the
 * final dump, which stops the container.  PARENT, relative to DIRECTORY, is
 * the previous pre-dump: only pages dirtied since it are written.  CRIU comes
 * from PATH and reads CRIU_CONFIG_FILE, as for lxc-checkpoint.  The exit
 * status says whether it worked; liblxc and CRIU say why not on stderr and in
 * DIRECTORY's logs.
 */
#include <lxc/lxccontainer.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	struct lxc_container *container;
	struct migrate_opts opts;
	unsigned int command;
	int ret;

	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: predump NAME LXCPATH pre-dump|dump DIRECTORY [PARENT]\n");
		return 2;
	}
	if (strcmp(argv[3], "pre-dump") == 0)
		command = MIGRATE_PRE_DUMP;
	else if (strcmp(argv[3], "dump") == 0 && argc == 6)
		command = MIGRATE_DUMP;
	else {
		fprintf(stderr, "predump: unknown action %s\n", argv[3]);
		return 2;
	}
	container = lxc_container_new(argv[1], argv[2]);
	if (!container || !container->is_running(container)) {
		fprintf(stderr, "predump: container %s is not running\n", argv[1]);
		return 1;
	}
	memset(&opts, 0, sizeof(opts));
	opts.directory = argv[4];
	opts.verbose = true;
	opts.stop = command == MIGRATE_DUMP;
	opts.predump_dir = argc == 6 ? argv[5] : NULL;
	/* The rootfs travels by rsync: its inodes differ on the target. */
	opts.preserves_inodes = false;
	ret = container->migrate(container, command, &opts, sizeof(opts));
	lxc_container_put(container);
	return ret == 0 ? 0 : 1;
}
