/*
 * execseed: starts the commands of `POST /1.0/containers/NAME/exec` in one
 * running container.
 *
 *     execseed NAME LXCPATH CGROUP_DIR...   (fd 3: a SOCK_SEQPACKET socket to the daemon)
 *
 * Moving a process into a container's cgroups (a write to cgroup.procs) waits
 * for an RCU grace period unless another move happened just before: on a
 * cgroup v1 host that is about 15 ms, most of what one `lxc-attach` costs.
 * The seed pays it once: it is a child of this launcher that joins the
 * container's cgroups (the CGROUP_DIRs) and then waits for requests.  For
 * each command it forks a runner, which starts the command with liblxc's
 * attach minus the cgroup move: the command joins the container's namespaces,
 * gets its id map, capabilities, personality, seccomp and LSM policy as with
 * `lxc-attach`, and inherits the cgroups.  The runner then forwards signals
 * to the command and reports its exit; it also keeps whatever liblxc leaves
 * behind per attach (liblxc 5.0 keeps the init's pidfd) out of the seed.
 *
 * The seed and its runners stay in the host's namespaces, so nothing inside
 * the container can see or signal them.  The seed exits when the container's
 * init does, when the daemon closes the socket, or when the launcher (the
 * daemon's child, which only waits for the seed) dies.
 *
 * Messages, one datagram each, fields ended by NUL:
 *   daemon -> seed  run ID FLAGS CWD ARGC ARG... ENV...   with 3 fds: stdin, stdout, stderr
 *                   (FLAGS "t": the fds are a terminal, to be the command's controlling one)
 *                   kill ID SIGNO
 *   seed -> daemon  ready PID | started ID PID | failed ID ERRNO | exited ID WAITSTATUS
 */

#define _GNU_SOURCE
#include <alloca.h>
#include <errno.h>
#include <fcntl.h>
#include <lxc/attach_options.h>
#include <lxc/lxccontainer.h>
#include <poll.h>
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

struct runner {
	char id[64];
	pid_t pid;
	int control; /* write end: signal numbers for the runner to deliver */
};

static struct lxc_container *container;
static int wake_pipe[2] = {-1, -1};
static struct runner *runners;
static size_t nrunners, capacity;

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

	if (wake_pipe[0] >= 0) {
		close(wake_pipe[0]);
		close(wake_pipe[1]);
	}
	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return -1;
	return sigaction(SIGCHLD, &action, NULL);
}

static void drain_wake_pipe(void)
{
	char drain[64];

	while (read(wake_pipe[0], drain, sizeof(drain)) > 0)
		;
}

struct program {
	char **argv;
	int terminal;
};

/* Runs in the attached child, inside the container: the exit codes of a shell. */
static int run_program(void *payload)
{
	struct program *program = payload;

	/* The terminal becomes the controlling one of the session liblxc made the command lead. */
	if (program->terminal) {
		if (getsid(0) != getpid() && setsid() < 0)
			return 126;
		if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
			return 126;
	}
	execvp(program->argv[0], program->argv);
	return errno == ENOENT ? 127 : 126;
}

/* The runner: start one command, deliver the signals asked for, report its end. */
static void run(const char *id, struct program *program, char **env, const char *cwd, int *fds, int control)
{
	lxc_attach_options_t options = LXC_ATTACH_OPTIONS_DEFAULT;
	int status, open_control = 1;
	pid_t pid = -1;

	if (watch_children() < 0) {
		say("failed %s %d", id, errno);
		_exit(0);
	}
	options.attach_flags = LXC_ATTACH_DEFAULT & ~LXC_ATTACH_MOVE_TO_CGROUP;
	options.env_policy = LXC_ATTACH_CLEAR_ENV;
	options.extra_env_vars = env;
	options.initial_cwd = (char *)cwd;
	options.stdin_fd = fds[0];
	options.stdout_fd = fds[1];
	options.stderr_fd = fds[2];
	errno = 0;
	if (container->attach(container, run_program, program, &options, &pid) < 0 || pid <= 0) {
		say("failed %s %d", id, errno ? errno : EIO);
		_exit(0);
	}
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	say("started %s %d", id, pid);
	for (;;) {
		struct pollfd polls[2] = {
			{.fd = wake_pipe[0], .events = POLLIN},
			{.fd = open_control ? control : -1, .events = POLLIN},
		};
		int signo;

		if (poll(polls, 2, -1) < 0 && errno != EINTR)
			_exit(1);
		if (polls[0].revents) {
			drain_wake_pipe();
			if (waitpid(pid, &status, WNOHANG) == pid) {
				say("exited %s %d", id, status);
				_exit(0);
			}
		}
		if (polls[1].revents) {
			ssize_t n = read(control, &signo, sizeof(signo));

			if (n == sizeof(signo))
				kill(pid, signo); /* not reaped yet: the pid is still the command's */
			else if (n == 0 || (errno != EAGAIN && errno != EINTR))
				open_control = 0; /* the seed is gone: the exit is still reported */
		}
	}
}

static void start(char **fields, int nfields, int *fds)
{
	struct program program;
	struct runner *entry;
	int control[2];
	long argc;
	pid_t pid;

	argc = nfields > 5 ? strtol(fields[4], NULL, 10) : 0;
	if (argc < 1 || argc > nfields - 5) {
		say("failed %s %d", fields[1], EINVAL);
		return;
	}
	if (nrunners == capacity) {
		size_t more = capacity ? capacity * 2 : 16;
		struct runner *grown = realloc(runners, more * sizeof(*grown));

		if (!grown) {
			say("failed %s %d", fields[1], ENOMEM);
			return;
		}
		runners = grown;
		capacity = more;
	}
	if (pipe2(control, O_CLOEXEC | O_NONBLOCK) < 0) {
		say("failed %s %d", fields[1], errno);
		return;
	}
	pid = fork();
	if (pid < 0) {
		say("failed %s %d", fields[1], errno);
		close(control[0]);
		close(control[1]);
		return;
	}
	if (pid == 0) {
		/* Only this command's pipe: the seed's end of the others is not ours to hold. */
		for (size_t i = 0; i < nrunners; i++)
			close(runners[i].control);
		close(control[1]);
		program.argv = alloca((argc + 1) * sizeof(char *));
		memcpy(program.argv, &fields[5], argc * sizeof(char *));
		program.argv[argc] = NULL;
		program.terminal = strchr(fields[2], 't') != NULL;
		/* The environment is the rest, up to the NULL after the last field. */
		run(fields[1], &program, &fields[5 + argc], fields[3], fds, control[0]);
	}
	close(control[0]);
	entry = &runners[nrunners++];
	snprintf(entry->id, sizeof(entry->id), "%s", fields[1]);
	entry->pid = pid;
	entry->control = control[1];
}

static void signal_command(char **fields, int nfields)
{
	int signo;

	if (nfields < 3)
		return;
	signo = atoi(fields[2]);
	for (size_t i = 0; i < nrunners; i++) {
		if (strcmp(runners[i].id, fields[1]) != 0)
			continue;
		if (write(runners[i].control, &signo, sizeof(signo)) < 0) {
			/* The runner has just ended, or is not reading: nothing to deliver to. */
		}
	}
}

static void reap_runners(void)
{
	int status;
	pid_t pid;

	drain_wake_pipe();
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (size_t i = 0; i < nrunners; i++) {
			if (runners[i].pid != pid)
				continue;
			/* A runner reports before exiting 0; one that could not has crashed. */
			if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
				say("failed %s %d", runners[i].id, EIO);
			close(runners[i].control);
			runners[i] = runners[--nrunners];
			break;
		}
	}
}

/* One request; false when the daemon has gone. */
static int serve(char *buffer)
{
	static char *fields[MAX_FIELDS + 1];
	char control[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = {buffer, MAX_MESSAGE};
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = control, .msg_controllen = sizeof(control),
	};
	int fds[3] = {-1, -1, -1}, nfds = 0, nfields = 0;
	struct cmsghdr *cmsg;
	ssize_t n;

	n = recvmsg(DAEMON_FD, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return 0;
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
	} else if (nfields >= 2) {
		say("failed %s %d", fields[1], EINVAL);
	} else {
		say("failed ? %d", E2BIG); /* cut short, or not NUL-ended: the daemon never sends that */
	}
	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return 1;
}

static int seed(int init_pidfd, pid_t launcher)
{
	char *buffer = malloc(MAX_MESSAGE);

	/* The daemon ends the seed by ending its launcher, our parent. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != launcher || !buffer || watch_children() < 0)
		return 1;
	say("ready %d", getpid());
	for (;;) {
		struct pollfd polls[3] = {
			{.fd = DAEMON_FD, .events = POLLIN},
			{.fd = wake_pipe[0], .events = POLLIN},
			{.fd = init_pidfd, .events = POLLIN},
		};

		if (poll(polls, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if (polls[1].revents)
			reap_runners();
		if (polls[2].revents)
			return 0; /* the container's init is gone: so is the container */
		if (polls[0].revents & POLLIN) {
			if (!serve(buffer))
				return 0;
		} else if (polls[0].revents) {
			return 0;
		}
	}
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
	pid_t launcher = getpid(), seed_pid;

	if (argc < 4 || fcntl(DAEMON_FD, F_SETFD, FD_CLOEXEC) < 0) {
		fprintf(stderr, "usage: %s NAME LXCPATH CGROUP_DIR... (the daemon's socket on fd 3)\n", argv[0]);
		return 2;
	}
	container = lxc_container_new(argv[1], argv[2]);
	if (!container || !container->is_running(container)) {
		say("failed 0 %d", ESRCH);
		return 1;
	}
	init_pidfd = syscall(SYS_pidfd_open, container->init_pid(container), 0);
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
		_exit(seed(init_pidfd, launcher));
	}
	close(DAEMON_FD);
	close(init_pidfd);
	while (waitpid(seed_pid, &status, 0) < 0)
		if (errno != EINTR)
			return 1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
