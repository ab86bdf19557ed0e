"""The /dev/lxd guest API: one unix socket served by the daemon, bind-mounted into the
containers that allow it, answering each caller about its own container only."""
