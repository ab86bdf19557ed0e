/*
 * execseed: starts the commands of `POST /1.0/containers/NAME/exec` in one
 * running container.
 *
 *     execseed NAME LXCPATH CGROUP_DIR...   (fd 3: a SOCK_SEQPACKET socket to the daemon)
 *
 * Three processes, each the parent of the next:
 *
 * - The launcher is the daemon's child and only waits for the seed.
 * - The seed joins the container's cgroups (the CGROUP_DIRs), once: moving a
 *   process between cgroups (a write to cgroup.procs) waits for an RCU grace
 *   period unless another move happened just before, about 15 ms on a
 *   cgroup v1 host, most of what one `lxc-attach` costs.
 * - The zygote is made by the seed with liblxc's attach, minus the cgroup move
 *   and minus the pid namespace: it has the container's other namespaces,
 *   root in its id map, its capabilities, personality, seccomp filter and LSM
 *   label (on exec), as an `lxc-attach` command would.  It then enters the
 *   pid namespace for its children only.  Each command is a fork of it: the
 *   command is in the container's pid namespace and inherits all of the
 *   above, without liblxc's per-attach work (five round trips to the
 *   container's monitor, the seccomp policy parsed again, three forks), which
 *   took 2 ms of the 3 ms a command used to take.  The zygote forwards
 *   signals to the commands and reports their ends.
 *
 * The launcher, the seed and the zygote are in the host's pid namespace, so
 * nothing inside the container can see or signal them.  The zygote takes no
 * more commands once the daemon says `end`, closes the socket, or the
 * container's init is gone; it exits when its last command has been reaped.
 * The seed exits when the zygote does; each dies with its parent.
 *
 * Messages, one datagram each, fields ended by NUL:
 *   daemon -> zygote  run ID FLAGS CWD ARGC ARG... ENV...   with 3 fds: stdin, stdout, stderr
 *                     (FLAGS "t": the fds are a terminal, to be the command's controlling one;
 *                     no PATH in ENV: LXD's default, with /snap/bin when the container has /snap)
 *                     kill ID SIGNO
 *                     end
 *   seed or zygote -> daemon  ready PID | started ID PID | failed ID ERRNO | exited ID WAITSTATUS
 *                     (ready: the zygote's pid; "failed 0 ERRNO": no zygote)
 */

#define _GNU_SOURCE
#include <alloca.h>
#include <errno.h>
#include <fcntl.h>
#include <lxc/attach_options.h>
#include <lxc/lxccontainer.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define DAEMON_FD 3
#define MAX_MESSAGE (256 * 1024)
#define MAX_FIELDS 8192
/* LXD's PATH for a command whose request sets none (and liblxc's). */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct command {
	char id[64];
	pid_t pid;
};

struct zygote_args {
	int init_pidfd;
	int enter_pidns;
	pid_t seed;
};

static struct lxc_container *container;
static int wake_pipe[2] = {-1, -1};
static struct command *commands;
static size_t ncommands, capacity;

static void say(const char *format, ...)
{
	char line[160];
	va_list ap;
	int n;

	va_start(ap, format);
	n = vsnprintf(line, sizeof(line), format, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < sizeof(line))
		send(DAEMON_FD, line, n, MSG_NOSIGNAL);
}

static void on_child(int signo)
{
	int saved = errno;
	char byte = 0;

	(void)signo;
	if (write(wake_pipe[1], &byte, 1) < 0) {
		/* Full: a wake-up is pending anyway. */
	}
	errno = saved;
}

static int watch_children(void)
{
	struct sigaction action = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	sigset_t none;

	sigemptyset(&none);
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0 || sigaction(SIGCHLD, &action, NULL) < 0)
		return -1;
	return sigprocmask(SIG_SETMASK, &none, NULL);
}

/* In the forked child, already inside the container: the command's fds, session, cwd, environment. */
static void exec_command(char **argv, char **env, const char *cwd, const int *fds, int terminal)
{
	signal(SIGCHLD, SIG_DFL);
	for (int i = 0; i < 3; i++)
		if (dup2(fds[i], i) < 0)
			_exit(126);
	/* The daemon's socket, the init's pidfd and liblxc's log are the zygote's, not the command's. */
	if (syscall(SYS_close_range, 3, ~0U, 0) < 0)
		_exit(126);
	if (terminal && (setsid() < 0 || ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0))
		_exit(126);
	/* As liblxc's attach does: a cwd that cannot be entered leaves the command at the root. */
	if (chdir(cwd) < 0 && chdir("/") < 0)
		_exit(126);
	clearenv();
	setenv("container", "lxc", 1);
	for (; *env; env++)
		putenv(*env);
	/* LXD adds /snap/bin to the default when the container has /snap. */
	if (!getenv("PATH")) {
		struct stat snap;
		int has_snap = stat("/snap", &snap) == 0 && S_ISDIR(snap.st_mode);

		setenv("PATH", has_snap ? DEFAULT_PATH ":/snap/bin" : DEFAULT_PATH, 1);
	}
	execvp(argv[0], argv);
	_exit(errno == ENOENT ? 127 : 126); /* the exit codes of a shell */
}

static void start(char **fields, int nfields, int *fds)
{
	long argc;
	pid_t pid;

	argc = nfields > 5 ? strtol(fields[4], NULL, 10) : 0;
	if (argc < 1 || argc > nfields - 5) {
		say("failed %s %d", fields[1], EINVAL);
		return;
	}
	if (ncommands == capacity) {
		size_t more = capacity ? capacity * 2 : 16;
		struct command *grown = realloc(commands, more * sizeof(*grown));

		if (!grown) {
			say("failed %s %d", fields[1], ENOMEM);
			return;
		}
		commands = grown;
		capacity = more;
	}
	pid = fork();
	if (pid < 0) {
		say("failed %s %d", fields[1], errno);
		return;
	}
	if (pid == 0) {
		char **argv = alloca((argc + 1) * sizeof(char *));

		memcpy(argv, &fields[5], argc * sizeof(char *));
		argv[argc] = NULL;
		/* The environment is the rest, up to the NULL after the last field. */
		exec_command(argv, &fields[5 + argc], fields[3], fds, strchr(fields[2], 't') != NULL);
	}
	snprintf(commands[ncommands].id, sizeof(commands[ncommands].id), "%s", fields[1]);
	commands[ncommands++].pid = pid;
	say("started %s %d", fields[1], pid);
}

static void signal_command(char **fields, int nfields)
{
	if (nfields < 3)
		return;
	for (size_t i = 0; i < ncommands; i++)
		if (strcmp(commands[i].id, fields[1]) == 0)
			kill(commands[i].pid, atoi(fields[2])); /* not reaped yet: the pid is still the command's */
}

static void reap_commands(void)
{
	char drain[64];
	int status;
	pid_t pid;

	while (read(wake_pipe[0], drain, sizeof(drain)) > 0)
		;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < ncommands; i++) {
			if (commands[i].pid != pid)
				continue;
			say("exited %s %d", commands[i].id, status);
			commands[i] = commands[--ncommands];
			break;
		}
	}
}

enum served { SERVED, ENDED, DAEMON_GONE };

/* One message from the daemon. */
static enum served serve(char *buffer)
{
	static char *fields[MAX_FIELDS + 1];
	char control[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = {buffer, MAX_MESSAGE};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control, .msg_controllen = sizeof(control),
	};
	int fds[3] = {-1, -1, -1}, nfds = 0, nfields = 0;
	enum served result = SERVED;
	struct cmsghdr *cmsg;
	ssize_t n;

	n = recvmsg(DAEMON_FD, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? SERVED : DAEMON_GONE;
	if (n == 0)
		return DAEMON_GONE;
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds, CMSG_DATA(cmsg), (nfds > 3 ? 3 : nfds) * sizeof(int));
	}
	if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 && buffer[n - 1] == '\0') {
		for (char *p = buffer; p < buffer + n; p += strlen(p) + 1) {
			if (nfields == MAX_FIELDS) {
				nfields = 0; /* too many: refused below */
				break;
			}
			fields[nfields++] = p;
		}
		fields[nfields] = NULL;
	}
	if (nfields >= 2 && strcmp(fields[0], "run") == 0) {
		if (nfds == 3)
			start(fields, nfields, fds);
		else
			say("failed %s %d", fields[1], EBADF);
	} else if (nfields >= 2 && strcmp(fields[0], "kill") == 0) {
		signal_command(fields, nfields);
	} else if (nfields == 1 && strcmp(fields[0], "end") == 0) {
		result = ENDED;
	} else if (nfields >= 2) {
		say("failed %s %d", fields[1], EINVAL);
	} else {
		say("failed ? %d", E2BIG); /* cut short, or not NUL-ended: the daemon never sends that */
	}
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return result;
}

/* The zygote, run by liblxc's attach: serve until told to end, then until the last command is reaped. */
static int zygote(void *payload)
{
	struct zygote_args *args = payload;
	char *buffer = malloc(MAX_MESSAGE);
	int taking = 1, daemon_open = 1, init_alive = 1;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != args->seed || !buffer)
		return 1;
	/* Only for the children: the zygote itself stays out of the container's sight. */
	if ((args->enter_pidns && setns(args->init_pidfd, CLONE_NEWPID) < 0) || watch_children() < 0) {
		say("failed 0 %d", errno);
		return 1;
	}
	say("ready %d", getpid());
	while (taking || ncommands > 0) {
		struct pollfd polls[3] = {
			{.fd = daemon_open ? DAEMON_FD : -1, .events = POLLIN},
			{.fd = wake_pipe[0], .events = POLLIN},
			{.fd = init_alive ? args->init_pidfd : -1, .events = POLLIN},
		};

		if (poll(polls, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (polls[1].revents)
			reap_commands();
		if (polls[2].revents)
			init_alive = taking = 0; /* the container is gone: its commands are being killed */
		if (polls[0].revents) {
			/* A hang-up with nothing left to read is the daemon gone too. */
			enum served served = polls[0].revents & POLLIN ? serve(buffer) : DAEMON_GONE;

			if (served != SERVED)
				taking = 0;
			if (served == DAEMON_GONE)
				daemon_open = 0;
		}
	}
	return 0;
}

/* The namespaces of `pid` that are not the caller's (as CLONE_NEW* flags). */
static int other_namespaces(pid_t pid)
{
	static const struct {
		const char *name;
		int flag;
	} kinds[] = {
		{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS}, {"pid", CLONE_NEWPID}, {"uts", CLONE_NEWUTS},
		{"ipc", CLONE_NEWIPC}, {"net", CLONE_NEWNET}, {"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
	};
	int flags = 0;

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		char path[64];
		struct stat ours, theirs;

		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i].name);
		if (stat(path, &ours) < 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, kinds[i].name);
		if (stat(path, &theirs) < 0)
			return -1;
		if (ours.st_dev != theirs.st_dev || ours.st_ino != theirs.st_ino)
			flags |= kinds[i].flag;
	}
	return flags;
}

/* The seed, in the container's cgroups: make the zygote, then wait for it. */
static int seed(int init_pidfd, pid_t init_pid, pid_t launcher)
{
	lxc_attach_options_t options = LXC_ATTACH_OPTIONS_DEFAULT;
	struct zygote_args args = {.init_pidfd = init_pidfd, .seed = getpid()};
	int namespaces, status;
	pid_t pid = -1;

	/* The daemon ends the seed by ending its launcher, our parent. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != launcher)
		return 1;
	namespaces = other_namespaces(init_pid);
	/* init_pid is only known to be the init's while its pidfd says it is alive. */
	if (namespaces < 0 || syscall(SYS_pidfd_send_signal, init_pidfd, 0, NULL, 0) < 0) {
		say("failed 0 %d", ESRCH);
		return 1;
	}
	args.enter_pidns = (namespaces & CLONE_NEWPID) != 0;
	options.namespaces = namespaces & ~CLONE_NEWPID;
	options.attach_flags = LXC_ATTACH_DEFAULT & ~LXC_ATTACH_MOVE_TO_CGROUP;
	options.env_policy = LXC_ATTACH_CLEAR_ENV;
	options.initial_cwd = "/";
	errno = 0;
	if (container->attach(container, zygote, &args, &options, &pid) < 0 || pid <= 0) {
		say("failed 0 %d", errno ? errno : EIO);
		return 1;
	}
	close(DAEMON_FD); /* the zygote's now */
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return 0;
}

/* Join one cgroup (its directory); where processes may only live in leaves, its `.lxc` leaf. */
static int join_cgroup(const char *dir)
{
	char path[4096];
	int fd, ret;

	for (int leaf = 0; leaf < 2; leaf++) {
		if (leaf) {
			snprintf(path, sizeof(path), "%s/.lxc", dir);
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				return -1;
		}
		snprintf(path, sizeof(path), leaf ? "%s/.lxc/cgroup.procs" : "%s/cgroup.procs", dir);
		fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			return -1;
		ret = write(fd, "0", 1); /* 0: the writer itself */
		close(fd);
		if (ret == 1)
			return 0;
		if (errno != EBUSY)
			return -1;
	}
	return -1;
}

int main(int argc, char *argv[])
{
	int init_pidfd, status;
	pid_t launcher = getpid(), seed_pid, init_pid;

	if (argc < 4 || fcntl(DAEMON_FD, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "usage: %s NAME LXCPATH CGROUP_DIR... (the daemon's socket on fd 3)\n", argv[0]);
		return 2;
	}
	container = lxc_container_new(argv[1], argv[2]);
	if (!container || !container->is_running(container)) {
		say("failed 0 %d", ESRCH);
		return 1;
	}
	init_pid = container->init_pid(container);
	init_pidfd = syscall(SYS_pidfd_open, init_pid, 0);
	if (init_pidfd < 0) {
		say("failed 0 %d", errno);
		return 1;
	}
	seed_pid = fork();
	if (seed_pid < 0) {
		say("failed 0 %d", errno);
		return 1;
	}
	if (seed_pid == 0) {
		for (int i = 3; i < argc; i++) {
			if (join_cgroup(argv[i]) < 0) {
				say("failed 0 %d", errno);
				_exit(1);
			}
		}
		_exit(seed(init_pidfd, init_pid, launcher));
	}
	close(DAEMON_FD);
	close(init_pidfd);
	while (waitpid(seed_pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
